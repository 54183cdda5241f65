"""What the model sees, on the page: a photo sent to a Fashion-MNIST model is marked unusual beside its
predictions, a garment is not, and the model's monitor panel follows the answer."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.ui.live import fashion_test_image, photo_test_image, upload

MODEL = "fmnist-lenet5"


def test_a_photo_is_unusual_to_a_fashion_model_and_the_panel_shows_the_monitor(page: Page) -> None:
    page.select_option("#model", MODEL)
    page.set_input_files("#file", files=upload("coffee.png", "image/png", photo_test_image().png))
    result = page.locator(".result")
    expect(result.locator(".unusual")).to_contain_text("Unusual input for this model")
    panel = page.locator("details.monitor")
    expect(panel.locator("summary")).to_contain_text(f"Monitor of {MODEL}")
    panel.locator("summary").click()
    expect(panel).to_contain_text("fashion-mnist test split")

    page.set_input_files("#file", files=upload("trouser.png", "image/png", fashion_test_image(2).png))
    expect(result.locator(".typical")).to_contain_text("Typical input for this model")
    expect(result.locator(".unusual")).to_have_count(0)
