"""Decoding (formats, limits, corrupt data, every PIL mode, EXIF) and the registry's preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.core.errors import BadImage, ImageTooLarge, UnsupportedMediaType
from service.core.registry import Preprocessing
from service.images import preprocess
from service.images.preprocess import decode, decode_upload, draft_size, to_base_mode, to_tensor
from tests.service.conftest import encode

GREY = Preprocessing(color_mode="L", resize=28, crop=28, interpolation="bilinear", mean=[0.5], std=[0.25])
RGB = Preprocessing(
    color_mode="RGB",
    resize=32,
    crop=24,
    interpolation="bicubic",
    mean=[0.485, 0.456, 0.406],
    std=[0.229, 0.224, 0.225],
)
BIG = 10_000_000


def gradient(w: int = 40, h: int = 30) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8), "RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_accepted_format_decodes(fmt: str) -> None:
    image = decode(encode(gradient(), fmt), max_pixels=BIG)
    assert image.size == (40, 30)
    assert to_tensor(image, RGB).shape == (3, 24, 24)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_other_image_formats_are_415(fmt: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=fmt if fmt != "PPM" else "PPM"):
        decode(encode(gradient(16, 16), fmt), max_pixels=BIG)


def test_bytes_that_are_no_image_are_400() -> None:
    with pytest.raises(BadImage):
        decode(b"this is not an image at all", max_pixels=BIG)
    with pytest.raises(BadImage):
        decode(b"", max_pixels=BIG)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_truncated_images_are_400(fmt: str) -> None:
    data = encode(gradient(64, 64), fmt)
    with pytest.raises(BadImage):
        decode(data[: len(data) // 2], max_pixels=BIG)


def test_pixel_cap_is_checked_from_the_header() -> None:
    data = encode(Image.new("L", (5000, 4000)), "PNG")
    with pytest.raises(ImageTooLarge, match="20000000"):
        decode(data, max_pixels=19_999_999)


def test_a_decompression_bomb_header_is_413_before_decoding() -> None:
    # A PNG header claiming 100000 x 100000 pixels, with no pixel data: decoding would need 10 GB.
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    png += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    with pytest.raises(ImageTooLarge):
        decode(png, max_pixels=BIG)


MODES = ["1", "L", "P", "LA", "RGBA", "CMYK", "I;16", "I", "F", "RGB", "YCbCr"]


def _in_mode(mode: str) -> tuple[Image.Image, str]:
    base = gradient()
    if mode == "I;16":
        arr = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        return Image.fromarray(arr), "PNG"  # uint16 arrays are mode I;16
    if mode == "I":
        return Image.fromarray(np.asarray(base.convert("L"), dtype=np.int32) * 257, "I"), "TIFF"
    if mode == "F":
        return Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255.0, "F"), "TIFF"
    fmt = {"CMYK": "JPEG", "LA": "PNG", "YCbCr": "JPEG"}.get(mode, "PNG" if mode != "RGBA" else "WEBP")
    if mode == "YCbCr":
        return base, fmt  # JPEG stores YCbCr
    return base.convert(mode), "TIFF" if mode == "CMYK" else fmt


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_becomes_a_tensor(mode: str) -> None:
    image, fmt = _in_mode(mode)
    decoded = decode(encode(image, fmt), max_pixels=BIG)
    for pp in (GREY, RGB):
        tensor = to_tensor(decoded, pp)
        assert tensor.dtype == np.float32
        assert tensor.shape == (len(pp.mean), pp.crop, pp.crop)
        assert np.isfinite(tensor).all()
    # the grey level survives every mode within quantisation (binary "1" is dithered, so only its range)
    grey = np.asarray(to_base_mode(decoded).convert("L"), dtype=np.float64)
    reference = np.asarray(gradient().convert("L"), dtype=np.float64)
    if mode not in ("1", "P", "CMYK"):
        assert np.abs(grey - reference).mean() < 6, mode


def test_sixteen_bit_values_are_scaled_not_clipped() -> None:
    arr = np.full((8, 8), 32896, dtype=np.uint16)  # 128 * 257
    decoded = decode(encode(Image.fromarray(arr), "PNG"), max_pixels=BIG)
    assert decoded.mode == "I;16"
    assert np.asarray(to_base_mode(decoded)).max() == 128


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_white(mode: str) -> None:
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    image = clear.convert(mode) if mode != "P" else clear.convert("RGB").convert("P")
    if mode == "P":
        image.info["transparency"] = 0
    decoded = decode(encode(image, "PNG"), max_pixels=BIG)
    assert np.asarray(to_base_mode(decoded).convert("L")).min() == 255


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("L", (40, 20), 0)
    wide.paste(255, (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode(encode(wide, "JPEG", exif=exif.tobytes()), max_pixels=BIG)
    assert decoded.size == (20, 40)
    arr = np.asarray(decoded.convert("L"), dtype=np.float64)
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50  # the left half is now on top


def test_animations_use_their_first_frame() -> None:
    frames = [Image.new("L", (16, 16), v) for v in (0, 255, 128)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode(buf.getvalue(), max_pixels=BIG)
    assert np.asarray(decoded.convert("L")).max() < 10


def test_large_jpegs_decode_in_draft_mode() -> None:
    data = encode(gradient(2000, 1600), "JPEG")
    decoded = decode(data, max_pixels=BIG, draft_size=224)
    assert min(decoded.size) >= 224 and decoded.size[0] <= 500  # reduced by the JPEG decoder itself
    assert decode(data, max_pixels=BIG).size == (2000, 1600)


def published_reduction(fmt: str, mode: str, size: tuple[int, int], resize: int) -> tuple[int, int]:
    """The decoded size `Preprocessing.reduce_at_decode` documents, computed from its words alone."""
    shorter = min(size)
    if fmt == "JPEG":
        s = next((s for s in (8, 4, 2) if s <= shorter // resize), 1)
        return -(-size[0] // s), -(-size[1] // s)  # sides rounded up
    n = shorter // (3 * resize)
    if mode in ("LA", "La", "RGBA", "RGBa", "I", "F") and n >= 2:
        return -(-size[0] // n), -(-size[1] // n)
    return size


@pytest.mark.parametrize(
    ("fmt", "mode", "size", "resize"),
    [
        ("JPEG", "RGB", (512, 600), 256),  # 1/2: 256x300
        ("JPEG", "RGB", (511, 600), 256),  # the shorter side under 2x: full size
        ("JPEG", "L", (2000, 1600), 224),  # 1/4 (1600 // 224 = 7)
        ("JPEG", "RGB", (3000, 2401), 256),  # 1/8, the sides rounded up: 375x301
        ("JPEG", "L", (1000, 130), 28),  # 130 // 28 = 4: 1/4, 250x33
        ("PNG", "RGBA", (700, 900), 100),  # 700 // 300 = 2: 350x450
        ("PNG", "RGBA", (599, 900), 100),  # 1: full size
        ("PNG", "LA", (1000, 1000), 28),  # 11
        ("TIFF", "F", (300, 200), 28),  # 2: 150x100
        ("PNG", "RGB", (2000, 1600), 224),  # not a reduced mode
        ("PNG", "I;16", (2000, 1600), 224),
    ],
)
def test_reduction_at_decoding_is_what_the_registry_field_says(
    fmt: str, mode: str, size: tuple[int, int], resize: int
) -> None:
    image = gradient(*size).convert("L" if mode in ("L", "I;16", "I", "F") else "RGB").convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(200)
    data = encode(image, fmt)
    decoded = decode_upload(data, max_pixels=BIG, draft_size=resize)
    assert decoded.image.size == published_reduction(fmt, decoded.image.mode, size, resize)
    assert (decoded.width, decoded.height) == size  # the upload's own size, whatever was decoded
    assert decode_upload(data, max_pixels=BIG).image.size == size  # no draft size: full decoding


def mpo(size: tuple[int, int]) -> bytes:
    """A JPEG with a second picture (an MPF index), as phones write them: Pillow's format MPO."""
    first = gradient(*size)
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[first.resize((size[0] // 4, size[1] // 4))])
    return buf.getvalue()


def test_a_jpeg_with_more_pictures_is_reduced_as_a_jpeg() -> None:
    decoded = decode_upload(mpo((1024, 1200)), max_pixels=BIG, draft_size=256)
    assert decoded.image.size == published_reduction("JPEG", "RGB", (1024, 1200), 256) == (256, 300)
    assert (decoded.width, decoded.height) == (1024, 1200)


def test_a_jpeg_with_more_pictures_has_its_scans_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "MAX_JPEG_SCANS", 0)  # any scan is one too many
    with pytest.raises(ImageTooLarge, match="scans"):
        decode(mpo((64, 64)), max_pixels=BIG)


def test_the_reported_size_is_the_upright_upload_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 600x512, shown 512x600
    data = encode(gradient(600, 512), "JPEG", exif=exif.tobytes())
    decoded = decode_upload(data, max_pixels=BIG, draft_size=256)
    assert decoded.image.size == (256, 300) and (decoded.width, decoded.height) == (512, 600)


def test_an_entry_without_reduction_decodes_at_full_size() -> None:
    assert draft_size(RGB) == RGB.resize
    full = RGB.model_copy(update={"reduce_at_decode": False})
    assert draft_size(full) is None
    data = encode(gradient(512, 600), "JPEG")
    assert decode_upload(data, max_pixels=BIG, draft_size=draft_size(full)).image.size == (512, 600)


def test_tensor_matches_the_registry_arithmetic() -> None:
    arr = np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) % 256
    image = Image.fromarray(arr.astype(np.uint8), "L")
    tensor = to_tensor(image, GREY)
    expected = (arr.astype(np.float32) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(tensor[0], expected, rtol=1e-6, atol=1e-6)


def test_shorter_side_resize_then_centre_crop() -> None:
    image = Image.new("RGB", (64, 32))
    image.paste((255, 255, 255), (24, 0, 40, 32))  # a white band in the middle
    tensor = to_tensor(
        image,
        Preprocessing(color_mode="L", resize=16, crop=16, interpolation="nearest", mean=[0.0], std=[1.0]),
    )
    assert tensor.shape == (1, 16, 16)
    column = tensor[0].mean(axis=0)
    assert column[4:12].min() > 0.9 and column[:2].max() < 0.1  # band centred after crop
