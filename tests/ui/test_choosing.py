"""Choosing on the page: model=auto with its constraints, and several models side by side (/compare)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.live import Server
from tests.ui.live import fashion_test_image, upload

# Test image 2 of Fashion-MNIST: a trouser, the class the models confuse least.
TROUSER = 2
FASHION = "fashion-mnist"


def fashion_models(catalogue: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in catalogue["models"] if m["dataset"] == FASHION and m["status"] != "unavailable"]


def trouser_label(server: Server, catalogue: dict[str, Any]) -> str:
    """The Fashion-MNIST label of the trouser image, from the service's own label list."""
    model = fashion_models(catalogue)[0]["name"]
    labels: list[str] = httpx.get(f"{server.url}/models/{model}/labels", timeout=10).json()["labels"]
    return labels[fashion_test_image(TROUSER).label]


def test_auto_classification_shows_the_chosen_model(
    page: Page, server: Server, catalogue: dict[str, Any]
) -> None:
    expect(page.locator("#auto-constraints")).to_be_hidden()  # a named model has no constraints
    page.select_option("#model", "auto")
    expect(page.locator("#auto-constraints")).to_be_visible()
    page.select_option("#auto-dataset", FASHION)
    page.fill("#min-top1", "90")
    page.fill("#max-size", "0.3")
    # The most accurate model meeting both: decided by registry figures alone, never by timing.
    fits = [m for m in fashion_models(catalogue) if m["top1"] >= 0.9 and m["size_mb"] <= 0.3]
    expected = max(fits, key=lambda m: m["top1"])["name"]
    image = fashion_test_image(TROUSER)
    page.set_input_files("#file", files=upload("trouser.png", "image/png", image.png))
    expect(page.locator("#chosen-model")).to_have_text(expected)
    expect(page.locator(".selection .chosen")).to_contain_text(f"of {len(fits)} model(s) meeting every")
    expect(page.locator(".top-label")).to_have_text(trouser_label(server, catalogue))
    considered = page.locator(".considered li")
    expect(considered).to_have_count(sum(m["dataset"] == FASHION for m in catalogue["models"]))
    expect(considered.first).to_have_attribute("data-model", expected)
    expect(page.locator(".considered li.fits")).to_have_count(len(fits))

    # A constraint change classifies the same image again.
    page.fill("#max-size", "")
    page.dispatch_event("#max-size", "change")
    best = max((m for m in fashion_models(catalogue) if m["top1"] >= 0.9), key=lambda m: m["top1"])
    expect(page.locator("#chosen-model")).to_have_text(best["name"])


def test_auto_with_nothing_fitting_names_the_closest(page: Page) -> None:
    page.select_option("#model", "auto")
    page.select_option("#auto-dataset", FASHION)
    page.fill("#max-latency", "0.000001")  # no model answers in a nanosecond, measured or not
    page.set_input_files("#file", files=upload("trouser.png", "image/png", fashion_test_image(TROUSER).png))
    error = page.locator("#error")
    expect(error).to_contain_text("No model meets the constraints.")
    expect(error.locator(".detail")).to_contain_text("Closest")
    expect(page.locator(".result")).to_have_count(0)


def choose(page: Page, names: list[str]) -> None:
    for box in page.locator("#sbs-model-list input[type=checkbox]").all():
        box.set_checked(str(box.get_attribute("value")) in names)


def test_compare_shows_the_models_side_by_side(page: Page, server: Server, catalogue: dict[str, Any]) -> None:
    trouser = trouser_label(server, catalogue)
    page.select_option("#sbs-dataset", FASHION)
    expect(page.locator("#sbs-model-list input:checked")).to_have_count(2)  # a pair to start with
    names = [m["name"] for m in fashion_models(catalogue)][:2]
    choose(page, names)
    image = fashion_test_image(TROUSER)
    page.set_input_files("#sbs-file", files=upload("trouser.png", "image/png", image.png))
    columns = page.locator("#sbs-results .column")
    expect(columns).to_have_count(2)
    for column, name in zip(columns.all(), names, strict=True):
        expect(column.locator("h3")).to_have_text(name)
        expect(column.locator(".bar-row")).to_have_count(3)  # the default top-k of the section
        expect(column.locator(".top-label")).to_have_text(trouser)
    left, right = (c.bounding_box() for c in columns.all())
    assert left and right and left["y"] == right["y"] and left["x"] + left["width"] <= right["x"]
    expect(page.locator("#sbs-results .agreement")).to_have_text(f"Both models say “{trouser}”.")

    # A third model joins the same image's comparison; one alone is refused before any request.
    third = [m["name"] for m in fashion_models(catalogue)][2]
    page.locator(f"#sbs-model-list input[value='{third}']").check()
    expect(columns).to_have_count(3)
    choose(page, names[:1])
    expect(page.locator("#sbs-error")).to_contain_text("Choose two or more models to compare.")
    expect(columns).to_have_count(0)


def test_side_by_side_on_a_dataset_with_one_model_says_why_nothing_runs(
    page: Page, catalogue: dict[str, Any]
) -> None:
    runnable = Counter(m["dataset"] for m in catalogue["models"] if m["status"] != "unavailable")
    lone = [dataset for dataset, n in runnable.items() if n == 1]
    if not lone:  # the committed zoo has one: its ImageNet photo model
        pytest.skip("every dataset has two or more models that run here")
    page.select_option("#sbs-dataset", lone[0])
    expect(page.locator("#sbs-model-list input")).to_have_count(1)
    page.set_input_files(
        "#sbs-file", files=upload("trouser.png", "image/png", fashion_test_image(TROUSER).png)
    )
    error = page.locator("#sbs-error")
    expect(error).to_contain_text("Choose two or more models to compare.")
    expect(error.locator(".detail")).to_have_text(
        f"{lone[0]} has 1 model that can run here; choose another dataset."
    )
