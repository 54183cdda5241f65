"""Screenshots of the web page for the docs: the page as it opens, docs/screenshot.png (1280 px) and
docs/screenshot-360.png, and docs/screenshot-choosing.png: model=auto and a side-by-side comparison.

Serves the committed zoo with every built model preloaded, so that latency is measured on this host.
The first two touch nothing on the page: they are what a visitor sees first.
Run: .venv/bin/python scripts/screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import FloatRect, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.core.registry import load_registry
from tests.paths import REPO
from tests.ui.live import fashion_test_image, launch_options, running_service, upload, zoo_root

FIRST_VIEW = {1280: REPO / "docs" / "screenshot.png", 360: REPO / "docs" / "screenshot-360.png"}
CHOOSING = REPO / "docs" / "screenshot-choosing.png"
ANKLE_BOOT = 0  # Fashion-MNIST test image 0


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready]")


def stage_choosing(page: Page) -> FloatRect:
    """model=auto under two constraints and three models side by side, on one Fashion-MNIST image;
    the area of the two sections."""
    files = upload("ankle-boot.png", "image/png", fashion_test_image(ANKLE_BOOT).png)
    page.select_option("#model", "auto")
    page.select_option("#auto-dataset", "fashion-mnist")
    page.fill("#min-top1", "90")
    page.fill("#max-size", "0.5")
    page.set_input_files("#file", files=files)
    page.wait_for_selector("#chosen-model")
    page.select_option("#sbs-dataset", "fashion-mnist")
    page.locator("#sbs-model-list input[value='fmnist-resnet20']").check()
    page.set_input_files("#sbs-file", files=files)
    page.wait_for_function("() => document.querySelectorAll('#sbs-results .column').length === 3")
    # Page coordinates (the clip of a full-page shot), not the viewport's: the uploads scrolled the page.
    top, bottom = page.evaluate(
        """() => [document.getElementById("classify").getBoundingClientRect().top + window.scrollY,
                  document.getElementById("side-by-side").getBoundingClientRect().bottom + window.scrollY]"""
    )
    return {"x": 0, "y": top - 8, "width": 1280, "height": bottom - top + 16}


def wait_all_loaded(url: str, names: list[str], timeout_s: float = 120) -> None:
    # Readiness covers the preloads' loads; their calibrations follow one by one.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = httpx.get(url + "/models").json()["models"]
        if all(r["status"] == "loaded" and r["latency_ms"] is not None for r in rows if r["name"] in names):
            return
        time.sleep(0.5)
    raise RuntimeError("not every built model loaded and measured in time")


def main() -> None:
    root = zoo_root()
    built = [m.name for m in load_registry(root / "registry.yaml").models if m.built]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_service(root, Path(tmp) / "server.log", calibration_s=0.5, preload=",".join(built)) as server,
        sync_playwright() as playwright,
    ):
        wait_all_loaded(server.url, built)
        browser = playwright.chromium.launch(**launch_options())  # type: ignore[arg-type]
        for width, path in FIRST_VIEW.items():
            page = browser.new_page(viewport={"width": width, "height": 900})
            open_page(page, server.url + "/")
            page.screenshot(path=str(path), full_page=True)
            print(f"wrote {path.relative_to(REPO)}")
            page.close()
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        open_page(page, server.url + "/")
        page.screenshot(path=str(CHOOSING), full_page=True, clip=stage_choosing(page))
        print(f"wrote {CHOOSING.relative_to(REPO)}")
        page.close()
        browser.close()


if __name__ == "__main__":
    main()
