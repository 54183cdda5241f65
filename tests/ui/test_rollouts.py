"""The page's Rollouts section: a model with a stable version and a shadow, after live requests, shows each
version's role and the shadow's agreement with its interval."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.service.conftest import _committed_zoo, _copy, fashion_view
from tests.service.versioned import set_policy, versioned_zoo
from tests.ui.live import fashion_test_image, running_service


def test_the_page_shows_versions_and_the_shadow_comparison(browser: Browser, tmp_path: Path) -> None:
    committed = _committed_zoo()
    zoo = _copy(committed, fashion_view(committed.registry), tmp_path / "zoo")
    name = versioned_zoo(zoo, tmp_path)
    own = zoo.registry.get(name).version
    set_policy(zoo, name, shadow=("v2", 100))
    with running_service(zoo.registry_path.parent, tmp_path / "server.log") as server:
        png = fashion_test_image(0).png
        for _ in range(5):
            r = httpx.post(
                server.url + "/classify",
                params={"model": name},
                content=png,
                headers={"Content-Type": "image/png"},
                timeout=30,
            )
            assert r.status_code == 200
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]", timeout=10_000)
        section = page.locator("#rollouts")
        expect(section).to_be_visible()
        expect(section.locator("h3")).to_have_text(name)
        expect(section.locator("table.rollout tbody tr")).to_have_count(3)
        expect(section.locator("tr", has_text="shadow")).to_contain_text("v2")
        expect(section.locator("p.shadow")).to_contain_text(f"Shadow v2 against {own}: top-1 agreement 0.0%")
        page.close()
