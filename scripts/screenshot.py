"""Screenshots of the web page for the docs: docs/screenshot.png (1280 px) and docs/screenshot-360.png.

Serves the committed zoo with every built model preloaded, so that latency is measured on this host,
classifies a real photo with the default (photo) model, and points at a model on the frontier.
Run: .venv/bin/python scripts/screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.registry import load_registry
from tests.ui.live import REPO, launch_options, photo_test_image, running_service, upload, zoo_root

SHOTS = {1280: REPO / "docs" / "screenshot.png", 360: REPO / "docs" / "screenshot-360.png"}


# How many markers and frontier labels lie under the open tip.
COVERED = """() => {
    const tip = document.getElementById("tip").getBoundingClientRect();
    const inside = (r) => r.right > tip.left && r.left < tip.right && r.bottom > tip.top && r.top < tip.bottom;
    const shapes = document.querySelectorAll("#plot .point:not(:hover), #plot .frontier-label");
    return [...shapes].filter((s) => inside(s.getBoundingClientRect())).length;
}"""


def stage(page: Page, url: str, width: int) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    image = photo_test_image()
    files = upload("coffee.png", "image/png", image.png)
    for _ in range(2):  # the second request shows warm timings
        page.set_input_files("#file", files=files)
        page.wait_for_function("() => document.getElementById('busy').textContent === ''")
    page.wait_for_selector(".result")
    if width >= 800:
        page.select_option("#dataset", "fashion-mnist")  # the zoo with the most models built
        # Show one model's row, choosing the model whose tip hides the fewest other markers and labels.
        points = page.locator("#plot .point").all()
        hidden = []
        for point in points:
            point.hover()
            hidden.append(page.evaluate(COVERED))
        points[hidden.index(min(hidden))].hover()


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
        for width, path in SHOTS.items():
            page = browser.new_page(viewport={"width": width, "height": 900})
            stage(page, server.url + "/", width)
            page.screenshot(path=str(path), full_page=True)
            print(f"wrote {path.relative_to(REPO)}")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
