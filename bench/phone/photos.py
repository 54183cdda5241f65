"""The section's inputs: 12-megapixel (4032x3024) JPEGs as a phone writes them, made deterministically
from the repository's photos and cached under the bench's work directory (never committed).

A phone stores the sensor's landscape frame and tags portrait shots with EXIF orientation 6 (turn 90
degrees clockwise to show); two of the four photos are such portrait shots. Upscaling a 500-pixel photo
leaves it far smoother than a sensor's: noise like a sensor's brings the files to the 2-3 MB of a phone's
quality-90 JPEG (measured: 0.8 MB without noise, 2.7 MB with it), and their decoding cost with it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.images import photo_jpeg

ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 4032, 3024
QUALITY = 90
NOISE = 4.0  # standard deviation of the luminance noise, in 8-bit levels (half of it per channel on top)
VERSION = 1  # part of the cached files' names: a change of the recipe above makes new ones
ORIENTATION = 0x0112
PORTRAIT = 6  # EXIF orientation: the stored frame is shown turned 90 degrees clockwise


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # a file of the repository, or "synthetic" (bench.images.photo_jpeg)
    orientation: int  # 1: as stored; 6: a portrait shot


RECIPES = (
    Recipe("cat", "docs/examples/cat.jpg", 1),
    Recipe("coffee", "docs/examples/coffee.jpg", PORTRAIT),
    Recipe("synthetic", "synthetic", 1),
    Recipe("cat-portrait", "docs/examples/cat.jpg", PORTRAIT),
)


def _source(recipe: Recipe) -> Image.Image:
    data = photo_jpeg() if recipe.source == "synthetic" else (ROOT / recipe.source).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _crop(image: Image.Image, aspect: float) -> Image.Image:
    """The centre of `image` with width / height = `aspect`."""
    w, h = image.size
    if w / h > aspect:
        keep = round(h * aspect)
        return image.crop(((w - keep) // 2, 0, (w - keep) // 2 + keep, h))
    keep = round(w / aspect)
    return image.crop((0, (h - keep) // 2, w, (h - keep) // 2 + keep))


def make(recipe: Recipe, seed: int) -> bytes:
    """One photo: the upright picture scaled to 12 MP, stored as the sensor's landscape frame."""
    source = _source(recipe)
    if recipe.orientation == PORTRAIT:
        upright = _crop(source, HEIGHT / WIDTH).resize((HEIGHT, WIDTH), Image.Resampling.BICUBIC)
        stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: orientation 6 undoes it
    else:
        stored = _crop(source, WIDTH / HEIGHT).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(stored, dtype=np.float32)
    pixels += rng.normal(0.0, NOISE, (HEIGHT, WIDTH, 1)).astype(np.float32)
    pixels += rng.normal(0.0, NOISE / 2, (HEIGHT, WIDTH, 3)).astype(np.float32)
    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif[ORIENTATION] = recipe.orientation
    exif[0x010F], exif[0x0110] = "convzoo bench", "12 MP phone photo"  # Make, Model
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=QUALITY, subsampling="4:2:0", exif=exif.tobytes())
    return buf.getvalue()


def ensure(directory: Path) -> list[Path]:
    """The photos' files in `directory`, made the first time (a few seconds each)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, recipe in enumerate(RECIPES):
        path = directory / f"{recipe.name}-{WIDTH}x{HEIGHT}-v{VERSION}.jpg"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(make(recipe, seed))
            tmp.replace(path)
        paths.append(path)
    return paths
