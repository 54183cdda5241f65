"""The README's examples use files the repository has, and its first screen is what a newcomer needs."""

from __future__ import annotations

import re

from tests.paths import REPO

README = (REPO / "README.md").read_text()


def test_every_file_an_example_sends_is_in_the_repository() -> None:
    # curl's `@file` (form parts and --data-binary) and the Python examples' Image.open("file")
    used = set(re.findall(r"@([\w./-]+\.(?:png|jpg|jpeg|webp|gif|bmp|tiff))", README))
    used |= set(re.findall(r'Image\.open\("([^"]+)"\)', README))
    assert "docs/examples/shoe.png" in used and "docs/examples/cat.jpg" in used
    missing = sorted(path for path in used if not (REPO / path).is_file())
    assert not missing, f"README examples use files the repository lacks: {missing}"


def test_the_first_screen_has_the_two_commands_a_photo_and_the_page() -> None:
    first_screen = "\n".join(README.splitlines()[:40])
    for needed in ("make run", "make test", "curl -s -F file=@docs/examples/cat.jpg", "docs/screenshot.png"):
        assert needed in first_screen, needed
    assert "## Configuration" not in README  # the reference is docs/configuration.md
