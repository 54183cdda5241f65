"""What a client that sends tensors (/v2 over REST or gRPC) does with an upload: the preprocessing that
`GET /models/{name}` publishes, applied as docs/preprocessing.md says, with Pillow and NumPy only."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

WIDE_MODES = ("LA", "La", "RGBA", "RGBa", "I", "F")


def published_tensor(data: bytes, pre: dict[str, Any]) -> np.ndarray:
    """An upload's tensor as `GET /models/{name}`'s preprocessing and docs/preprocessing.md say, with
    Pillow and NumPy only (L or RGB uploads; the other modes' flattening is not needed here)."""
    resize, crop = pre["resize"], pre["crop"]
    image: Image.Image = Image.open(io.BytesIO(data))
    if pre["reduce_at_decode"] and image.format in ("JPEG", "MPO"):
        image.draft(image.mode, (resize, resize))  # the JPEG decoder's own 1/2, 1/4 or 1/8 scaling
    image.load()
    factor = min(image.size) // (3 * resize)
    if pre["reduce_at_decode"] and image.mode in WIDE_MODES and factor >= 2:
        image = image.reduce(factor)
    image = ImageOps.exif_transpose(image).convert(pre["color_mode"])
    w, h = image.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    image = image.resize(size, Image.Resampling[pre["interpolation"].upper()])
    left, top = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
    image = image.crop((left, top, left + crop, top + crop))
    x = (np.asarray(image, dtype=np.float32) / 255 - np.float32(pre["mean"])) / np.float32(pre["std"])
    return np.ascontiguousarray(x.reshape(crop, crop, -1).transpose(2, 0, 1)[None], dtype=np.float32)
