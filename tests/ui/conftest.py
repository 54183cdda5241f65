"""Fixtures of the browser tests: one real convzoo process serving the committed zoo, one headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.live import Server
from tests.ui.live import launch_options, running_service, zoo_root

EXPECTED_4XX = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = zoo_root()
    if not (root / "registry.yaml").is_file():
        pytest.fail(f"no registry.yaml in {root}: the fashion zoo must be committed (make models)")
    with running_service(root, tmp_path_factory.mktemp("ui") / "server.log") as live:
        yield live


@pytest.fixture(scope="session")
def catalogue(server: Server) -> dict[str, Any]:
    """GET /models as the page sees it."""
    response = httpx.get(server.url + "/models", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


# Package scope: the sync Playwright API leaves its event loop marked as running between calls, which
# breaks the anyio tests of any directory that runs after this one in the same session.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**launch_options())  # type: ignore[arg-type]
        yield chromium
        chromium.close()


def open_page(browser: Browser, server: Server, width: int) -> tuple[Page, list[str]]:
    """The page loaded and its model list rendered; the list collects uncaught script errors and console
    errors such as Content-Security-Policy refusals (a 4xx answer the page is meant to show is no error)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text) if msg.type == "error" and not EXPECTED_4XX.match(msg.text) else None
        ),
    )
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]", timeout=10_000)
    return page, errors


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    page, errors = open_page(browser, server, 1280)
    yield page
    page.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
