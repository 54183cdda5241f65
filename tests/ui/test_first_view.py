"""What the page shows when it opens: a dataset whose models run here, and the models that cannot run
folded away behind a toggle, in the table and in the plot's "not on the plot" box."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from playwright.sync_api import Page, expect


def can_run(model: dict[str, Any]) -> bool:
    return bool(model["status"] != "unavailable")


def expected_first_dataset(catalogue: dict[str, Any]) -> str:
    """The dataset with the most models that run here; a tie goes to the default model's dataset."""
    runnable: Counter[str] = Counter(str(m["dataset"]) for m in catalogue["models"] if can_run(m))
    default = next(str(m["dataset"]) for m in catalogue["models"] if m["name"] == catalogue["default"])
    most = max(runnable.values())
    return default if runnable.get(default) == most else next(d for d, n in runnable.items() if n == most)


def test_the_page_opens_on_a_dataset_with_models_that_run(page: Page, catalogue: dict[str, Any]) -> None:
    dataset = expected_first_dataset(catalogue)
    runnable = [m for m in catalogue["models"] if m["dataset"] == dataset and can_run(m)]
    # The committed zoo: every Fashion-MNIST model is built, one ImageNet model is.
    assert len(runnable) >= 2, "the zoo has no dataset with two models that run: nothing to compare"
    for select in ["#dataset", "#auto-dataset", "#sbs-dataset"]:
        expect(page.locator(select)).to_have_value(dataset)
    expect(page.locator("#models tbody tr")).to_have_count(len(runnable))
    expect(page.locator("#models tbody .status-unavailable")).to_have_count(0)
    plotted = [m for m in runnable if m["top1"] is not None and m["weights"] != "random" and m["size_mb"]]
    expect(page.locator("#x-axis")).to_have_value("size_mb")  # the test service measures no latency
    expect(page.locator("#plot .point")).to_have_count(len(plotted))
    # The toggle shows only when the dataset has models that cannot run (the committed fashion zoo: none).
    toggle = page.locator("#show-unavailable")
    if any(m["dataset"] == dataset and not can_run(m) for m in catalogue["models"]):
        expect(toggle).to_be_visible()
    else:
        expect(toggle).to_be_hidden()


def test_models_that_cannot_run_are_folded_until_the_toggle(page: Page, catalogue: dict[str, Any]) -> None:
    page.select_option("#dataset", "")  # every dataset, so every model that cannot run is a candidate
    cannot = [m["name"] for m in catalogue["models"] if not can_run(m)]
    assert cannot, "every model of the zoo runs here: nothing to fold"
    rows = page.locator("#models tbody tr")
    apart = page.locator("#apart li")
    toggle = page.locator("#show-unavailable")
    expect(rows).to_have_count(len(catalogue["models"]) - len(cannot))
    expect(page.locator("#models tbody .status-unavailable")).to_have_count(0)
    for name in cannot:
        expect(apart.filter(has_text=name)).to_have_count(0)
    expect(toggle).to_have_text(f"Show {len(cannot)} models that cannot run here")
    expect(toggle).to_have_attribute("aria-pressed", "false")

    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(toggle).to_have_text(f"Hide the {len(cannot)} models that cannot run here")
    expect(rows).to_have_count(len(catalogue["models"]))
    expect(page.locator("#models tbody .status-unavailable")).to_have_count(len(cannot))
    shown = {str(r.get_attribute("data-model")) for r in page.locator("#models tbody tr").all()}
    assert set(cannot) <= shown

    toggle.click()
    expect(page.locator("#models tbody .status-unavailable")).to_have_count(0)


def test_the_first_dataset_rule(page: Page) -> None:
    """catalog.js's firstDataset on made-up rows: the most runnable models wins, a tie goes to the
    default's dataset, a default that cannot run does not win a tie it would lose."""
    rows = [
        {"name": "a1", "dataset": "A", "status": "loaded"},
        {"name": "a2", "dataset": "A", "status": "available"},
        {"name": "b1", "dataset": "B", "status": "loaded"},
        {"name": "b2", "dataset": "B", "status": "unavailable"},
        {"name": "b3", "dataset": "B", "status": "unavailable"},
        {"name": "c1", "dataset": "C", "status": "unavailable"},
    ]
    extra_b = {"name": "b4", "dataset": "B", "status": "available"}
    cases = [
        (rows, "b1", "A"),  # A has two that run, B one
        ([*rows, extra_b], "b1", "B"),  # a tie, and the default is B's
        ([*rows, extra_b], "a1", "A"),  # a tie, and the default is A's
        ([r | {"status": "unavailable"} for r in rows], "c1", "C"),  # nothing runs: the default's
    ]
    for models, default, expected in cases:
        got = page.evaluate(
            f"import('./static/catalog.js').then((m) => m.firstDataset({json.dumps(models)}, {json.dumps(default)}))"
        )
        assert got == expected, (default, got)
