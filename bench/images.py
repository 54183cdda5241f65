"""The request bodies: a 500x375 JPEG for ImageNet models, a Fashion-MNIST test image as a 28x28 PNG."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FASHION_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def photo_jpeg(width: int = 500, height: int = 375, quality: int = 90) -> bytes:
    """A deterministic photo-like JPEG: smooth shading, shapes, texture and sensor-like noise.

    JPEG decoding cost depends on size and entropy; a flat or pure-noise image would be unrealistically
    cheap or expensive to decode.
    """
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            110 + 80 * np.sin(x / 97.0) * np.cos(y / 61.0),
            120 + 60 * np.cos(x / 53.0 + y / 89.0),
            90 + 70 * y / height,
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, 160)), y0 + int(rng.integers(10, 120))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def fashion_png(index: int = 0) -> bytes:
    """Fashion-MNIST test image `index` as a 28x28 greyscale PNG."""
    if FASHION_IMAGES.is_file():
        with gzip.open(FASHION_IMAGES, "rb") as f:
            raw = f.read()
        pixels = np.frombuffer(raw, np.uint8, offset=16 + 784 * index, count=784).reshape(28, 28)
    else:  # the dataset package is missing: a synthetic garment-sized blob, same size and format
        y, x = np.mgrid[0:28, 0:28]
        pixels = (255 * np.exp(-((x - 14) ** 2 + (y - 14) ** 2) / 60.0)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG")
    return buf.getvalue()
