"""The web page at `/`, in headless Chromium against a real convzoo process serving the committed zoo."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.live import Server
from tests.ui.conftest import open_page
from tests.ui.live import fashion_test_image, photo_test_image, upload

STATIC = Path(__file__).resolve().parents[2] / "service" / "static"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
# Test image 2 of Fashion-MNIST: a trouser, the class the models confuse least.
TROUSER = 2


def labels_of(server: Server, model: str) -> list[str]:
    labels: list[str] = httpx.get(f"{server.url}/models/{model}/labels", timeout=10).json()["labels"]
    return labels


def can_run(model: dict[str, Any]) -> bool:
    return bool(model["status"] != "unavailable")


def frontier(models: list[dict[str, Any]], x: str) -> set[str]:
    """The Pareto frontier of the models that run here, computed independently of the page's script."""
    ranked = [m for m in models if m["weights"] != "random" and m["top1"] is not None and m[x] and can_run(m)]
    ranked.sort(key=lambda m: (m[x], -m["top1"]))
    best, names = -1.0, set()
    for m in ranked:
        if m["top1"] > best:
            best = m["top1"]
            names.add(m["name"])
    return names


def test_page_and_assets_are_served_offline(server: Server) -> None:
    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
    types = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    for path in sorted(STATIC.iterdir()):
        asset = httpx.get(f"{server.url}/static/{path.name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(types[path.suffix])
        # Nothing is fetched from elsewhere: the only absolute URL is SVG's namespace name.
        assert re.findall(r"https?://[^\s\"']+", asset.text) in ([], [SVG_NAMESPACE]), path.name
    missing = httpx.get(server.url + "/static/nothing.js", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert httpx.get(server.url + "/static/..%2Fmain.py", timeout=10).status_code == 404


def test_upload_shows_the_right_top_label(page: Page, server: Server, catalogue: dict[str, Any]) -> None:
    expect(page.locator("#model")).to_have_value(catalogue["default"])  # the photo model
    image = photo_test_image()
    page.set_input_files("#file", files=upload("coffee.png", "image/png", image.png))
    result = page.locator(".result")
    expect(result.locator(".top-label")).to_have_text(image.label)
    expect(result.locator(".bar-row")).to_have_count(5)
    expect(page.locator(".timing")).to_contain_text("inference")
    thumb = result.locator("img.thumb")
    expect(thumb).to_have_js_property("naturalWidth", image.width)
    expect(page.locator("#error")).to_be_hidden()


@pytest.mark.parametrize("gesture", ["drop", "paste"])
def test_drop_and_paste_classify(page: Page, server: Server, catalogue: dict[str, Any], gesture: str) -> None:
    image = photo_test_image()
    page.fill("#top-k", "3")
    page.dispatch_event("#top-k", "change")
    # A real DataTransfer holding a File, delivered as the drop or paste event the browser would send.
    page.evaluate(
        """([bytes, gesture]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "coffee.png", { type: "image/png" }));
            const event = gesture === "drop"
                ? new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true })
                : new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
            (gesture === "drop" ? document.getElementById("drop") : document).dispatchEvent(event);
        }""",
        [list(image.png), gesture],
    )
    expect(page.locator(".top-label")).to_have_text(image.label)
    expect(page.locator(".bar-row")).to_have_count(3)


def test_a_non_image_shows_a_clear_error(page: Page) -> None:
    page.set_input_files("#file", files=upload("notes.txt", "text/plain", b"not an image at all\n"))
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("That file is not an image we can read.")
    expect(error.locator(".detail")).not_to_be_empty()  # the service's own explanation
    expect(page.locator(".result")).to_have_count(0)


def test_top_k_out_of_range_shows_the_service_detail(page: Page) -> None:
    page.select_option("#model", "fmnist-vgg16")
    page.fill("#top-k", "11")  # ten classes in Fashion-MNIST
    image = fashion_test_image(TROUSER)
    page.set_input_files("#file", files=upload("trouser.png", "image/png", image.png))
    error = page.locator("#error")
    expect(error).to_contain_text("A setting is out of range.")
    expect(error.locator(".detail")).to_contain_text("top_k")


def column(page: Page, index: int) -> list[str]:
    return page.locator(f"#models tbody tr > :nth-child({index})").all_inner_texts()


def numbers(cells: list[str]) -> list[float]:
    """The numeric cells in order; a missing value ("—") may only come after all of them."""
    present = [c for c in cells if c != "—"]
    assert cells[: len(present)] == present, f"missing values are not last: {cells}"
    return [float(c.replace(",", "")) for c in present]


def test_table_sorts_by_any_column_with_mouse_and_keyboard(page: Page, catalogue: dict[str, Any]) -> None:
    page.select_option("#dataset", "")  # every dataset
    page.click("#show-unavailable")  # and every model, also those that cannot run here
    expect(page.locator("#models tbody tr")).to_have_count(len(catalogue["models"]))
    size_heading = page.locator("#models th[data-key='size_mb']")
    size_heading.get_by_role("button").click()
    expect(size_heading).to_have_attribute("aria-sort", "ascending")
    sizes = numbers(column(page, 3))
    assert sizes == sorted(sizes) and len(sizes) == sum(m["size_mb"] is not None for m in catalogue["models"])
    size_heading.get_by_role("button").click()
    expect(size_heading).to_have_attribute("aria-sort", "descending")
    sizes = numbers(column(page, 3))
    assert sizes == sorted(sizes, reverse=True)

    depth_heading = page.locator("#models th[data-key='depth']")
    depth_heading.get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(depth_heading).to_have_attribute("aria-sort", "ascending")
    expect(size_heading).to_have_attribute("aria-sort", "none")
    depths = numbers(column(page, 7))
    assert depths == sorted(depths)

    page.select_option("#dataset", "fashion-mnist")
    expect(page.locator("#models tbody tr")).to_have_count(
        sum(m["dataset"] == "fashion-mnist" for m in catalogue["models"])
    )


def test_one_plot_point_per_model_with_accuracy(page: Page, catalogue: dict[str, Any]) -> None:
    page.select_option("#dataset", "")  # every dataset
    page.select_option("#x-axis", "gflops")  # every registry entry has GFLOPs
    ranked = [m for m in catalogue["models"] if m["top1"] is not None and m["weights"] != "random"]
    points = page.locator("#plot .point")
    # Folded: the models that run here; unfolded: every model with an accuracy, the others drawn apart.
    expect(points).to_have_count(sum(can_run(m) for m in ranked))
    page.click("#show-unavailable")
    expect(points).to_have_count(len(ranked))
    assert {p.get_attribute("data-model") for p in points.all()} == {m["name"] for m in ranked}
    cannot = {p.get_attribute("data-model") for p in page.locator("#plot .point.cannot-run").all()}
    assert cannot == {m["name"] for m in ranked if not can_run(m)}
    expected: set[str] = set()
    for dataset in {m["dataset"] for m in ranked}:
        expected |= frontier([m for m in ranked if m["dataset"] == dataset], "gflops")
    on_frontier = {p.get_attribute("data-model") for p in page.locator("#plot .point.on-frontier").all()}
    assert on_frontier == expected
    expect(page.locator("#plot .frontier-label")).to_have_count(len(expected))
    apart = page.locator("#apart li")
    expect(apart).to_have_count(len(catalogue["models"]) - len(ranked))


def test_hover_and_focus_show_the_row(page: Page) -> None:
    tip = page.locator("#tip")
    page.select_option("#dataset", "")
    # Every marker takes the pointer on every axis: no label or line drawn over it intercepts the hover.
    for axis in ["latency_ms", "size_mb", "gflops"]:
        page.select_option("#x-axis", axis)
        for point in page.locator("#plot .point").all():
            name = str(point.get_attribute("data-model"))
            point.hover(timeout=2000)
            expect(tip.locator("strong")).to_contain_text(name)
            expect(page.locator(f"#models tbody tr[data-model='{name}']")).to_have_class("highlight")
    page.mouse.move(0, 0)
    expect(tip).to_be_hidden()
    page.locator("#plot .point").first.focus()
    expect(tip).to_be_visible()


def test_readable_at_360_px(browser: Browser, server: Server) -> None:
    page, errors = open_page(browser, server, 360)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 360, f"the page is {overflow} px wide at a 360 px viewport"
    assert page.locator("#plot svg").bounding_box()["width"] <= 360  # type: ignore[index]
    controls = ["#model", "#top-k", "#file", "#auto-dataset", "#max-latency", "#min-top1", "#max-size"]
    controls += ["#sbs-dataset", "#sbs-top-k", "#sbs-file", "#dataset", "#x-axis"]
    for control in controls:
        assert page.locator(f"label[for='{control[1:]}']").count() == 1
    page.close()
    assert errors == []


def test_every_control_is_reachable_by_keyboard(page: Page) -> None:
    wanted = {
        "model",
        "top-k",
        "file",
        "sbs-dataset",
        "sbs-top-k",
        "sbs-file",
        "dataset",
        "x-axis",
        "sort",
        "point",
    }
    reached: set[str] = set()
    for _ in range(160):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate(
                """() => { const a = document.activeElement;
                    return a.id || a.getAttribute("data-model") && "point" || a.className || a.tagName; }"""
            )
        )
        if wanted <= reached:
            break
    assert wanted <= reached, reached
    # The toggle appears with a dataset that has models that cannot run, next in the tab order after the
    # x axis, and works from the keyboard.
    page.select_option("#dataset", "")
    page.focus("#x-axis")
    page.keyboard.press("Tab")
    toggle = page.locator("#show-unavailable")
    expect(toggle).to_be_focused()
    page.keyboard.press("Enter")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#models tbody .status-unavailable").first).to_be_visible()


def test_the_file_picker_opens_from_the_keyboard(
    page: Page, server: Server, catalogue: dict[str, Any]
) -> None:
    # Listening first turns on Playwright's interception of file choosers before the key is pressed.
    page.on("filechooser", lambda _: None)
    page.focus("#file")
    with page.expect_file_chooser(timeout=5000) as chooser:
        page.keyboard.press("Enter")
    image = photo_test_image()
    chooser.value.set_files(upload("coffee.png", "image/png", image.png))
    expect(page.locator(".top-label")).to_have_text(image.label)


def test_latency_not_measured_here_shows_the_registry_figure_and_its_host(page: Page, server: Server) -> None:
    # The rows as they are now: the tests before this one have loaded, and so measured, some models.
    catalogue = httpx.get(server.url + "/models", timeout=10).json()
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.select_option("#dataset", "")
    # The live server runs without background calibration: models it has not loaded have no latency
    # of this host, only the registry's.
    other = [
        m
        for m in catalogue["models"]
        if m["latency_ms"] is None and m["registry_latency_ms"] is not None and can_run(m)
    ]
    assert other, "every model with a registry latency was measured here; nothing to show"
    m = other[0]
    latency = page.locator(f"#models tbody tr[data-model='{m['name']}'] td.other-host")
    expect(latency).to_contain_text("\u2020")
    expect(latency).to_have_attribute(
        "title", re.compile(f"registry, measured on {re.escape(m['registry_latency_host'])}")
    )
    measured = [x for x in catalogue["models"] if x["latency_ms"] is not None]
    for x in measured:  # a figure of this host is shown as it is
        expect(page.locator(f"#models tbody tr[data-model='{x['name']}'] td.other-host")).to_have_count(0)
