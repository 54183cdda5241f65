"""Uploaded bytes to a model's input tensor: safe decoding, then each registry entry's preprocessing."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.registry import Preprocessing

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
ACCEPTED_MEDIA_TYPES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/gif": "GIF",
    "image/tiff": "TIFF",
}
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# Errors Pillow raises on corrupt or truncated data.
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image has more pixels than this service accepts.") from None
    except UnidentifiedImageError:
        pass
    except _CORRUPT:
        raise BadImage("The image could not be decoded; the file is corrupt or truncated.") from None
    # Not an accepted format: tell a known-but-refused format apart from bytes that are no image.
    try:
        with Image.open(io.BytesIO(data)) as other:
            fmt = other.format or "unknown"
    except Exception:
        raise BadImage(
            "The upload is not a decodable image; send JPEG, PNG, WEBP, BMP, GIF or TIFF."
        ) from None
    raise UnsupportedMediaType(f"Image format {fmt} is not accepted; send JPEG, PNG, WEBP, BMP, GIF or TIFF.")


def decode(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode an upload to a loaded, upright PIL image (first frame of animations).

    The pixel cap is checked from the header before the pixels are decoded. `draft_size` lets large
    JPEGs decode at a reduced scale whose shorter side stays at least that many pixels.
    """
    if not data:
        raise BadImage("The upload is empty.")
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels."
        )
    if width == 0 or height == 0:
        raise BadImage("The image has no pixels.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning: our own cap is lower and already checked
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            if image.format == "JPEG" and draft_size is not None:
                image.draft(image.mode if image.mode in ("L", "RGB") else None, (draft_size, draft_size))
            image.load()
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image has more pixels than this service accepts.") from None
    except _CORRUPT:
        raise BadImage("The image could not be decoded; the file is corrupt or truncated.") from None
    return _upright(image)


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image  # unreadable EXIF: keep the pixels as stored


def _white_background(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _integer_to_l(image: Image.Image) -> Image.Image:
    arr = np.asarray(image)
    if image.mode == "F":
        arr = arr.astype(np.float64)
        scaled = arr * 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else arr
    else:
        arr = arr.astype(np.float64)
        # 16-bit data (I;16*, or I holding 16-bit PNG samples) spans 0..65535.
        wide = image.mode.startswith("I;16") or np.max(arr, initial=0) > 255
        scaled = arr / 257.0 if wide else arr
    return Image.fromarray(np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8), mode="L")


def to_base_mode(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit L or RGB; transparency is composited over white."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "P":
        return _white_background(image) if "transparency" in image.info else image.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return _white_background(image)
    if mode == "1":
        return image.convert("L")
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        return _integer_to_l(image)
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _resize_shorter(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    # torchvision's Resize(int): the shorter side becomes `size`, the longer one is truncated.
    if width <= height:
        new = (size, max(1, int(size * height / width)))
    else:
        new = (max(1, int(size * width / height)), size)
    return image if new == image.size else image.resize(new, resample)


def _centre_crop(image: Image.Image, crop: int) -> Image.Image:
    width, height = image.size
    left = int(round((width - crop) / 2.0))
    top = int(round((height - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def to_tensor(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """A decoded image to one CHW float32 array, as the registry entry's preprocessing specifies."""
    base = to_base_mode(image).convert(preprocessing.color_mode)
    resized = _resize_shorter(base, preprocessing.resize, _RESAMPLING[preprocessing.interpolation])
    cropped = _centre_crop(resized, preprocessing.crop)
    arr = np.asarray(cropped, dtype=np.float32) / np.float32(255.0)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def warm_up() -> None:
    """Import Pillow's format plugins now, so the first upload does not pay for it."""
    Image.init()
    decode(_TINY_PNG, max_pixels=1)


_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415478da6360000000020001e221bc330000000049454e44ae426082"
)
