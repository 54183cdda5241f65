"""Hostile and unusual images through /classify: decompression bombs stopped by our own pixel cap before
decoding, corrupt uploads answered 400, unusual but valid images answered 200, and property tests showing
that no byte string makes the decode path fail with anything but a 4xx problem."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.api.classification import prepare as _prepare
from service.core.errors import ServiceError, problem_of
from service.core.registry import Preprocessing
from service.core.settings import Settings
from tests.security.conftest import smallest
from tests.service.conftest import ClientFactory, Zoo, encode

pytestmark = pytest.mark.anyio


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A valid PNG of `width` x `height` black pixels: all-zero rows deflate about a thousandfold."""
    row = b"\0" * (1 + (width * bit_depth + 7) // 8)  # filter byte + packed samples
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)  # greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def test_our_pixel_cap_is_below_pillows() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None and Settings().max_image_pixels < Image.MAX_IMAGE_PIXELS


async def test_a_30000_square_png_bomb_is_413_before_decoding(zoo: Zoo, client_for: ClientFactory) -> None:
    bomb = png_bomb(30_000, 30_000)  # 900 megapixels in about 110 KB
    assert len(bomb) < 200_000
    async with client_for(zoo) as client:
        started = time.perf_counter()
        r = await client.post("/classify", content=bomb, headers={"content-type": "image/png"})
        elapsed = time.perf_counter() - started
    assert r.status_code == 413 and r.json()["type"].endswith("image-too-large"), r.text
    assert elapsed < 1.0  # decoding would inflate 112 MB of rows


_PEAK_RSS = """
import resource, sys
from service.core.errors import ImageTooLarge
from service.images.preprocess import decode
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode(data, max_pixels=40_000_000)
except ImageTooLarge as exc:
    print(exc.detail)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_bomb_under_pillows_limit_is_stopped_by_our_cap_without_decoding(repo_root: Path) -> None:
    # 8000 x 8000 = 64 Mpx: Pillow would decode it (its limit is ~89 Mpx), ours (40 Mpx) refuses it.
    # Decoding would take 64 MB in Pillow's own allocations, so the process's peak RSS tells.
    bomb = png_bomb(8000, 8000, bit_depth=8)
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 8000 * 8000
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS],
        input=bomb,
        capture_output=True,
        cwd=repo_root,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    detail, growth = out.stdout.decode().strip().splitlines()
    assert "64000000 pixels" in detail  # our cap's message, read from the header
    assert int(growth) < 16_000_000, f"peak RSS grew {int(growth)} bytes: the pixels were decoded"


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.new("RGB", size, (200, 30, 30)), "JPEG")


def _png(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.new("RGB", size, (30, 200, 30)), "PNG")


BAD = {
    "zero-bytes": b"",
    "random-bytes": np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "text-named-jpg": b"Dear service, this is a photo of a shoe.\n" * 20,
    "truncated-jpeg": _jpeg()[: len(_jpeg()) // 2],
    "truncated-png": _png()[: len(_png()) // 2],
    "png-signature-only": b"\x89PNG\r\n\x1a\n",
    "jpeg-markers-only": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\xff\xd9",
}


@pytest.mark.parametrize("name", list(BAD))
async def test_corrupt_uploads_are_400(name: str, zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo) as client:
        r = await client.post("/classify", files={"file": ("photo.jpg", BAD[name], "image/jpeg")})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(Image.new("RGB", (40, 20), (10, 10, 10)), "JPEG", exif=exif.tobytes())


def _sixteen_bit() -> bytes:
    return encode(Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)), "PNG")


GOOD: dict[str, Callable[[], bytes]] = {
    "cmyk": lambda: encode(Image.new("CMYK", (32, 32), (0, 50, 100, 10)), "JPEG"),
    "16-bit": _sixteen_bit,
    "palette": lambda: encode(Image.new("RGB", (32, 32), (5, 90, 200)).convert("P"), "PNG"),
    "la": lambda: encode(Image.new("LA", (32, 32), (90, 128)), "PNG"),
    "rgba": lambda: encode(Image.new("RGBA", (32, 32), (90, 10, 10, 0)), "PNG"),
    "grayscale": lambda: encode(Image.new("L", (32, 32), 77), "PNG"),
    "exif-rotated": _exif_rotated,
    "1x1": lambda: encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
    "1x4000": lambda: encode(Image.new("L", (1, 4000), 200), "PNG"),
    "4000x1": lambda: encode(Image.new("L", (4000, 1), 200), "GIF"),
}


async def test_unusual_valid_images_are_classified(zoo: Zoo, client_for: ClientFactory) -> None:
    images = {name: make() for name, make in GOOD.items()}
    async with client_for(zoo) as client:
        for name, data in images.items():
            r = await client.post("/classify", files={"file": (name, data)})
            assert r.status_code == 200, (name, r.text)
            assert r.json()["results"][0]["predictions"], name


# ---- property tests on the decode path ------------------------------------------------------------------

GREY = Preprocessing(color_mode="L", resize=28, crop=28, interpolation="bilinear", mean=[0.5], std=[0.25])
RGB = Preprocessing(
    color_mode="RGB",
    resize=256,
    crop=224,
    interpolation="bilinear",
    mean=[0.485, 0.456, 0.406],
    std=[0.229, 0.224, 0.225],
)
SEEDS = [
    _png(),
    _jpeg(),
    encode(Image.new("P", (20, 20)), "GIF"),
    encode(Image.new("RGB", (20, 20)), "WEBP"),
    encode(Image.new("RGB", (20, 20)), "BMP"),
    encode(Image.new("L", (20, 20)), "TIFF"),
    _sixteen_bit(),
    _exif_rotated(),
]


class _Entry:
    """The two fields of a registry entry that `_prepare` reads."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing


def _assert_4xx_or_tensor(data: bytes) -> None:
    for pp in (GREY, RGB):
        try:
            prepared = _prepare(data, _Entry(pp), 1_000_000)  # type: ignore[arg-type]
        except ServiceError as exc:
            assert 400 <= problem_of(exc).status < 500, (type(exc).__name__, exc.detail)
            continue
        assert prepared.tensor.shape == (len(pp.mean), pp.crop, pp.crop)
        assert np.isfinite(prepared.tensor).all()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


FUZZ = settings(
    max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_fail_the_server(data: bytes) -> None:
    _assert_4xx_or_tensor(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt EXIF: expected here
@FUZZ
@given(mutated_images())
def test_mutated_images_never_fail_the_server(data: bytes) -> None:
    _assert_4xx_or_tensor(data)


async def test_fuzzed_bytes_over_http_are_never_5xx(zoo: Zoo, client_for: ClientFactory) -> None:
    # The same property end to end, for a handful of inputs: the route adds no 5xx of its own.
    rng = np.random.default_rng(3)
    bodies = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (1, 7, 100, 5000)]
    bodies += [s[: len(s) - 9] + s[-9:][::-1] for s in SEEDS]
    entry = smallest(zoo.registry)
    async with client_for(zoo) as client:
        for body in bodies:
            for media in ("image/png", "image/jpeg"):
                r = await client.post(
                    "/classify", params={"model": entry.name}, content=body, headers={"content-type": media}
                )
                assert r.status_code < 500, (body[:16], r.text)
