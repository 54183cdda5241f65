"""Uploaded bytes to a model's input tensor: safe decoding, then each registry entry's preprocessing.

Every step runs under one error mapping (`image_errors`): whatever Pillow or NumPy raises on a hostile
file is the upload's fault, a 4xx, never a 500. The cost of each step is bounded before it is paid:
the pixel cap and the JPEG scan count are read from the file before decoding; only the first frame is
looked at; and the geometry is decided first, so that only the source pixels that reach the model's
crop are converted, in bands, reduced in their native mode (see docs/security.md).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps

from service.core.errors import BadImage, ImageTooLarge, ServiceError
from service.core.registry import Preprocessing
from service.images.image_gate import gate

log = logging.getLogger("convzoo.preprocess")

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

# A progressive JPEG costs a pass over every coefficient per scan: encoders write about 10 scans, 64 is
# generous; and scans x pixels is capped too (about a second of this decoder's time on a 2-core host).
MAX_JPEG_SCANS = 64
MAX_JPEG_SCAN_PIXELS = 2_000_000_000
# Pillow keeps a pointer and a block per image row: a 1 x 40,000,000 image takes 700 MB. A row counts
# as this many pixels against the pixel cap.
ROW_COST = 16
# Integer reduction at decoding, of the wide modes only (4 bytes a pixel, converted anyway), where the
# resize that follows still averages at least this many source pixels per output pixel: Pillow's own
# rule for results indistinguishable from a direct resize (`reducing_gap`). Published with every entry
# (`Preprocessing.reduce_at_decode`), so an integer: a client computes the factor exactly.
REDUCING_GAP = 3
_REDUCED_AT_DECODE = ("LA", "La", "RGBA", "RGBa", "I", "F")
# Pillow opens a JPEG with more than one picture (an MPF index: a phone's gain map or depth map, a stereo
# pair) as format MPO; its first picture, the one decoded, is a plain JPEG.
JPEG_FORMATS = ("JPEG", "MPO")
_BAND_PIXELS = 1 << 20  # other modes are converted to L or RGB in bands of about this many pixels
# The resized image (before the crop) is made only up to this many times the crop's area; beyond,
# resize and crop are one resampling of the crop's source rectangle.
MAX_RESIZED_AREA = 16


@contextmanager
def image_errors() -> Iterator[None]:
    """The one error mapping of the image path: anything a hostile file makes Pillow or NumPy raise."""
    try:
        yield
    except ServiceError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image has more pixels than this service accepts.") from None
    except MemoryError:
        raise ImageTooLarge("The image needs more memory than this service grants one upload.") from None
    except _CORRUPT:
        raise BadImage("The image could not be decoded; the file is corrupt or truncated.") from None
    except Exception as exc:
        log.warning("image rejected on an unexpected %s: %s", type(exc).__name__, exc)
        raise BadImage(
            "The image could not be decoded; the file is corrupt or of an unsupported kind."
        ) from None


def _open(data: bytes) -> Image.Image:
    """The upload opened by its own format's plugin only, once the gate has passed it."""
    fmt = gate(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's bomb warning: our own cap is lower, checked next
        return Image.open(io.BytesIO(data), formats=[fmt])


_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")  # not stuffing (FF00), a restart or a fill byte


def jpeg_scans(data: bytes) -> int:
    """The number of scans (SOS segments) of a JPEG, from its markers, without decoding."""
    pos, scans = 2, 0
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return scans  # not a marker where one must be: the decoder will refuse the file
        marker = data[pos + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker != 0xDA:
            pos = end
            continue
        scans += 1
        found = _NEXT_MARKER.search(data, end)  # skip the entropy-coded data
        if found is None:
            break
        pos = found.start()
    return scans


def _check_jpeg_cost(data: bytes, pixels: int) -> None:
    scans = jpeg_scans(data)
    if scans > MAX_JPEG_SCANS or scans * pixels > MAX_JPEG_SCAN_PIXELS:
        raise ImageTooLarge(
            f"The JPEG has {scans} scans of {pixels} pixels; this service decodes at most {MAX_JPEG_SCANS} "
            f"scans and {MAX_JPEG_SCAN_PIXELS} scan-pixels."
        )


def reduction(size: tuple[int, int], resize: int) -> int:
    """The integer factor an image may be reduced by before a shorter-side resize to `resize`."""
    return max(1, min(size) // (resize * REDUCING_GAP))


def draft_size(preprocessing: Preprocessing) -> int | None:
    """What `decode` is given for an entry: its resize where it reduces at decoding, else None."""
    return preprocessing.resize if preprocessing.reduce_at_decode else None


class Decoded(NamedTuple):
    image: Image.Image
    width: int  # the upload's own size, upright, before any reduction at decoding
    height: int
    rotated: bool = False  # an EXIF orientation other than "as stored" was applied


def decode(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """`decode_upload`'s image."""
    return decode_upload(data, max_pixels=max_pixels, draft_size=draft_size).image


def decode_upload(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Decoded:
    """Decode an upload to a loaded, upright PIL image (the first frame of animations and pages), with
    the size of the upload itself.

    The pixel cap and a JPEG's scans are checked from the file before the pixels are decoded.
    `draft_size` (the resize of `Preprocessing.reduce_at_decode`) lets large images come back reduced,
    as that field documents: by the JPEG decoder itself, or by an integer reduction that leaves the
    shorter side at least `REDUCING_GAP` times `draft_size`. None: full decoding.
    """
    if not data:
        raise BadImage("The upload is empty.")
    with image_errors():
        image = _open(data)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels."
            )
        if width * height + ROW_COST * height > max_pixels:
            raise ImageTooLarge(
                f"The image is {width}x{height}: its {height} rows cost as much to decode as "
                f"{ROW_COST * height} pixels; the limit is {max_pixels} pixels."
            )
        if width == 0 or height == 0:
            raise BadImage("The image has no pixels.")
        if image.format in JPEG_FORMATS:  # an MPO file's first picture is a JPEG, decoded as one
            _check_jpeg_cost(data, width * height)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning: our own cap is lower and already checked
            # The first frame is the one open() positioned on: n_frames would walk every page.
            if image.format in JPEG_FORMATS and draft_size is not None:
                image.draft(image.mode if image.mode in ("L", "RGB") else None, (draft_size, draft_size))
            image.load()
        if draft_size is not None and image.mode in _REDUCED_AT_DECODE:
            factor = reduction(image.size, draft_size)
            if factor > 1:
                image = image.reduce(factor)  # before the orientation is applied: that copies the image
        upright, orientation = _upright(image)
        rotated = orientation not in (None, 1)
        if orientation in _TURNS:
            return Decoded(upright, height, width, rotated)
        return Decoded(upright, width, height, rotated)


# Formats whose EXIF, when present, Pillow keeps in `info["exif"]` (PNG: its eXIf chunk, or the raw
# profile text ImageMagick writes): without it there is no orientation to read.
_EXIF_IN_INFO = ("JPEG", "MPO", "PNG", "WEBP")
_TURNS = (5, 6, 7, 8)  # the orientations that exchange width and height
# EXIF is parsed in Python, about a microsecond per byte; a JPEG's is at most 64 KiB (one APP1 segment),
# and PNG and WebP may carry one as large as the upload: beyond this size, its orientation is not read.
MAX_EXIF_BYTES = 1 << 16


def _upright(image: Image.Image) -> tuple[Image.Image, int | None]:
    """The image as its EXIF orientation shows it, and that orientation (None without one)."""
    if image.format in _EXIF_IN_INFO:
        exif = image.info.get("exif", image.info.get("Raw profile type exif"))
        if exif is None or len(exif) > MAX_EXIF_BYTES:
            return image, None
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
        return ImageOps.exif_transpose(image), orientation
    except Exception:
        return image, None  # unreadable EXIF: keep the pixels as stored


def _white_background(image: Image.Image) -> Image.Image:
    if image.mode in ("La", "RGBa"):  # premultiplied alpha converts only to its straight twin
        image = image.convert({"La": "LA", "RGBa": "RGBA"}[image.mode])
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def sample_scale(image: Image.Image) -> float | None:
    """For 16-bit, 32-bit and float images: the factor that maps samples to 0..255, from the whole
    image (so that bands of it are scaled alike); None for 8-bit modes."""
    mode = image.mode
    if mode.startswith("I;16"):
        return 1 / 257.0
    if mode == "I":
        return 1 / 257.0 if image.getextrema()[1] > 255 else 1.0  # type: ignore[operator]
    if mode == "F":
        high = image.getextrema()[1]
        return 255.0 if not high > 1.0 else 1.0  # type: ignore[operator]
    return None


def _integer_to_l(image: Image.Image, scale: float) -> Image.Image:
    arr = np.asarray(image).astype(np.float32)  # float32: a band, or an image of at most the pixel cap
    scaled = np.clip(np.nan_to_num(arr * np.float32(scale)), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def to_base_mode(image: Image.Image, scale: float | None = None) -> Image.Image:
    """Any PIL mode to 8-bit L or RGB; transparency is composited over white. `scale` maps wide samples
    to 0..255 (default: `sample_scale` of this image)."""
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
        return _integer_to_l(image, scale if scale is not None else sample_scale(image) or 1.0)
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _resized_size(size: tuple[int, int], resize: int) -> tuple[int, int]:
    width, height = size
    # torchvision's Resize(int): the shorter side becomes `size`, the longer one is truncated.
    if width <= height:
        return resize, max(1, int(resize * height / width))
    return max(1, int(resize * width / height)), resize


def _crop_box(size: tuple[int, int], pp: Preprocessing) -> tuple[float, float, float, float]:
    """The source rectangle that the shorter-side resize then the centre crop map onto the output."""
    new_w, new_h = _resized_size(size, pp.resize)
    left = round((new_w - pp.crop) / 2.0)
    top = round((new_h - pp.crop) / 2.0)
    sx, sy = size[0] / new_w, size[1] / new_h
    return left * sx, top * sy, (left + pp.crop) * sx, (top + pp.crop) * sy


def _base(image: Image.Image) -> Image.Image:
    """The image in L or RGB; other modes converted band by band, without full-size copies between."""
    if image.mode in ("L", "RGB"):
        return image
    scale = sample_scale(image)  # of the whole image, so that every band is scaled alike
    rows = max(1, _BAND_PIXELS // image.width)
    base: Image.Image | None = None
    for y in range(0, image.height, rows):
        part = to_base_mode(image.crop((0, y, image.width, min(image.height, y + rows))), scale)
        if base is None:
            base = Image.new(part.mode, image.size)
        base.paste(part, (0, y))
    assert base is not None
    return base


def to_tensor(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """A decoded image to one CHW float32 array, as the registry entry's preprocessing specifies.

    The shorter side is resized, then the centre is cropped. Where the resized image would be large
    (its longer side grows with the aspect ratio: a 1x1,000,000 image would become 28x28,000,000
    pixels), the two are one resampling of the crop's source rectangle instead, and the resized image
    is never made.
    """
    with image_errors():
        pp = preprocessing
        base = _base(image)
        if base.mode != pp.color_mode and not (base.mode == "L" and pp.color_mode == "RGB"):
            base = base.convert(pp.color_mode)  # grey to RGB only copies: done on the crop, below
        resample = _RESAMPLING[pp.interpolation]
        new = _resized_size(base.size, pp.resize)
        if new[0] * new[1] <= MAX_RESIZED_AREA * pp.resize * pp.resize:
            resized = base if new == base.size else base.resize(new, resample)
            cropped = resized if resized.size == (pp.crop, pp.crop) else _centre_crop(resized, pp.crop)
        else:
            cropped = base.resize((pp.crop, pp.crop), resample, box=_crop_box(base.size, pp))
        if cropped.mode != pp.color_mode:
            cropped = cropped.convert(pp.color_mode)
        return _normalised(np.asarray(cropped), pp.mean, pp.std)


@dataclass(frozen=True)
class Tensors:
    """One upload made into one tensor per preprocessing, and what it cost."""

    size: tuple[int, int]  # of the upload itself, upright
    tensors: list[np.ndarray]
    decode_ms: float
    preprocess_ms: list[float]


def tensors_of(data: bytes, preprocessings: list[Preprocessing], *, max_pixels: int) -> Tensors:
    """One upload made into one tensor per preprocessing, decoded once for each distinct decoding they ask
    for (`draft_size`), so that each model sees the pixels its /classify would. Only the tensors leave the
    process that runs this: a decoded 36 Mpx photo sent back from a worker process cost 330 MB and a second
    of copying."""
    t0 = time.perf_counter()
    decoded: dict[int | None, Decoded] = {}
    for d in sorted({draft_size(p) for p in preprocessings}, key=lambda d: -1 if d is None else d):
        decoded[d] = decode_upload(data, max_pixels=max_pixels, draft_size=d)
    decode_ms = (time.perf_counter() - t0) * 1e3
    tensors, times = [], []
    for p in preprocessings:
        t0 = time.perf_counter()
        tensors.append(to_tensor(decoded[draft_size(p)].image, p))
        times.append((time.perf_counter() - t0) * 1e3)
    first = next(iter(decoded.values()))
    return Tensors((first.width, first.height), tensors, decode_ms, times)


def _normalised(pixels: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(pixels / 255 - mean) / std per channel, as CHW float32: one multiply-add per channel plane, written
    in place, from the uint8 pixels (about a sixth of the time of the arithmetic on a float HWC copy and
    its transpose, for a 224x224 RGB crop; equal to it within float32 rounding)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    out = np.empty((channels, height, width), dtype=np.float32)
    for c in range(
        channels
    ):  # one mean and std for all channels, or one each (plain floats: no array set-up)
        m, sd = mean[c if len(mean) > 1 else 0], std[c if len(std) > 1 else 0]
        np.multiply(pixels[:, :, c], np.float32(1.0 / (255.0 * sd)), out=out[c])
        out[c] += np.float32(-m / sd)
    return out


def _centre_crop(image: Image.Image, crop: int) -> Image.Image:
    width, height = image.size
    left = round((width - crop) / 2.0)
    top = round((height - crop) / 2.0)
    return image.crop((left, top, left + crop, top + crop))


def warm_up() -> None:
    """Import Pillow's format plugins now, so the first upload does not pay for it."""
    Image.init()
    decode(_TINY_PNG, max_pixels=1 + ROW_COST)


_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415478da6360000000020001e221bc330000000049454e44ae426082"
)
