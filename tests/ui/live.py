"""A real convzoo process on a free loopback port, and Debian's Chromium driven by Playwright.

Shared by the browser tests and by scripts/screenshot.py.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from playwright.sync_api import FilePayload

from export.fashion.data import read_idx
from tests.live import Server, start_service, stop_service
from tests.paths import FASHION_TEST_IMAGES, FASHION_TEST_LABELS, REPO

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches outside this machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def zoo_root() -> Path:
    """The directory holding registry.yaml and models/: the repository, or CONVZOO_TEST_ZOO."""
    return Path(os.environ.get("CONVZOO_TEST_ZOO", REPO))


@contextmanager
def running_service(
    root: Path, log_path: Path, *, calibration_s: float = 0.05, **settings: str
) -> Iterator[Server]:
    """`python -m service` on 127.0.0.1 and a free port, serving `root`'s registry, ready; stopped on exit.

    `settings` are further CONVZOO_* variables, e.g. preload="a,b".
    """
    server = start_service(
        registry_path=root / "registry.yaml",
        models_dir=root / "models",
        log_path=log_path,
        env={
            "CONVZOO_CALIBRATION_S": str(calibration_s),
            "CONVZOO_LOG_LEVEL": "warning",
            **{f"CONVZOO_{k.upper()}": v for k, v in settings.items()},
        },
    )
    try:
        yield server
    finally:
        stop_service(server)


def launch_options() -> dict[str, object]:
    """Playwright launch options for Debian's Chromium; never a downloaded browser."""
    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-browser.sh (Debian package chromium)")
    return {"executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS, "headless": True}


@dataclass(frozen=True)
class FashionTestImage:
    png: bytes
    label: int


def fashion_test_image(index: int) -> FashionTestImage:
    """One image of the Fashion-MNIST test split, encoded as PNG, with its true class index."""
    images = read_idx(FASHION_TEST_IMAGES)
    labels = read_idx(FASHION_TEST_LABELS)
    buf = io.BytesIO()
    Image.fromarray(images[index]).save(buf, "PNG")
    return FashionTestImage(buf.getvalue(), int(labels[index]))


@dataclass(frozen=True)
class PhotoTestImage:
    png: bytes
    label: str  # the ImageNet class the photo model gives it
    width: int


def photo_test_image() -> PhotoTestImage:
    """scikit-image's CC0 photo of an espresso, as PNG; the bundled photo model calls it "espresso"."""
    from skimage import data

    buf = io.BytesIO()
    image = Image.fromarray(data.coffee())  # type: ignore[no-untyped-call]
    image.save(buf, "PNG")
    return PhotoTestImage(buf.getvalue(), "espresso", image.width)


def upload(name: str, mime_type: str, data: bytes) -> list[FilePayload]:
    """One in-memory file for `page.set_input_files`."""
    return [{"name": name, "mimeType": mime_type, "buffer": data}]
