"""Hostile inputs, one test per class (each over several members of the class): what once escaped as a
500 is the right 4xx, and what once cost gigabytes or seconds is bounded. The classes and their
measured cost before and after: docs/security.md."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from service.api.limits import safe_text
from service.core.errors import ImageTooLarge
from service.core.registry import Preprocessing
from service.images.preprocess import MAX_JPEG_SCANS, decode, jpeg_scans, to_tensor
from tests.security import hostile
from tests.security.conftest import smallest
from tests.service.conftest import ClientFactory, Zoo, encode

pytestmark = pytest.mark.anyio

GREY = Preprocessing(color_mode="L", resize=28, crop=28, interpolation="bilinear", mean=[0.5], std=[0.25])
RGB = Preprocessing(
    color_mode="RGB", resize=256, crop=224, interpolation="bicubic", mean=[0.5] * 3, std=[0.25] * 3
)


# ---- 500s that are 4xx (or 200) now ----------------------------------------------------------------------

ODD_TIFFS: dict[str, Callable[[], bytes]] = {
    "La": lambda: hostile.tiff(8, 8, bits=[8, 8], extra_samples=1),
    "LA": lambda: hostile.tiff(8, 8, bits=[8, 8], extra_samples=2),
    "RGBa": lambda: hostile.tiff(8, 8, bits=[8] * 4, photometric=2, extra_samples=1),
    "RGBA-16": lambda: hostile.tiff(8, 8, bits=[16] * 4, photometric=2, extra_samples=2),
    "I;16 with alpha": lambda: hostile.tiff(8, 8, bits=[16, 16], extra_samples=1),
    "I;32 signed": lambda: hostile.tiff(8, 8, bits=[32], sample_format=2),
    "float 64": lambda: hostile.tiff(8, 8, bits=[64], sample_format=3),
}


async def test_odd_tiff_modes_are_classified_or_refused_never_500(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    entry = smallest(zoo.registry)
    async with client_for(zoo) as client:
        for kind, make in ODD_TIFFS.items():
            r = await client.post(
                "/classify",
                params={"model": entry.name},
                content=make(),
                headers={"content-type": "image/tiff"},
            )
            assert r.status_code in (200, 400, 415), (kind, r.status_code, r.text)
            if kind in ("La", "LA", "RGBa"):
                assert r.status_code == 200, (kind, r.text)


# (charset, filename bytes): decoders that turn a filename into a lone surrogate, or no text at all
CHARSETS = [
    ("utf-7", b"+2AA-.png"),
    ("unicode_escape", b"\\ud800.png"),
    ("raw_unicode_escape", b"\\udfff.png"),
    ("utf-16", b"\x00\xd8.p"),
    ("hex", b"zz.png"),
    ("no-such-charset", b"a.png"),
]


async def test_a_client_chosen_multipart_charset_is_415_not_500(zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo) as client:
        for charset, filename in CHARSETS:
            body, media = hostile.multipart_with_charset(hostile.grey_png(28, 28), charset, filename)
            for path in ("/classify", "/compare?models=" + smallest(zoo.registry).name):
                r = await client.post(path, content=body, headers={"content-type": media})
                assert r.status_code == 415, (charset, path, r.text)
                assert r.headers["content-type"] == "application/problem+json"
        body, media = hostile.multipart_with_charset(hostile.grey_png(28, 28), "UTF-8", b"x.png")
        r = await client.post("/classify", content=body, headers={"content-type": media})
        assert r.status_code == 200, r.text


async def test_filenames_are_echoed_as_safe_text(zoo: Zoo, client_for: ClientFactory) -> None:
    png = hostile.grey_png(28, 28)
    names = {"ok.png": "ok.png", "a\x1bb\x7f.png": "a\ufffdb\ufffd.png", "é" * 300: "é" * 255}
    async with client_for(zoo) as client:
        for sent, echoed in names.items():
            r = await client.post(
                "/classify",
                params={"model": smallest(zoo.registry).name},
                files={"file": (sent, png, "image/png")},
            )
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["filename"] == echoed
    assert safe_text("\ud800x") == "\ufffdx"  # a lone surrogate, as a charset-less decoder could give


SHAPES = [[0, 2**62, 2**62], [0, 10**30], [0, 2**31, 2**31, 2**31], [2**40], [0] + [2**20] * 5]


async def test_v2_hostile_shapes_numbers_and_nesting_are_400_at_once(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    entry = smallest(zoo.registry)
    url = f"/v2/models/{entry.name}/infer"
    bodies = [hostile.v2_body(shape, "[]", name=entry.input.name) for shape in SHAPES]
    for datatype in ("FP32", "FP16", "FP64", "INT64", "UINT8"):
        for literal in (str(10**400), str(-(10**400)), "1e400"):
            bodies.append(hostile.v2_body([1], f"[{literal}]", datatype, name=entry.input.name))
    for depth, elements in ((31, 3_000_000), (1, 3_000_000), (32, 10), (40, 1)):
        bodies.append(hostile.deep_v2_body(depth, elements))
    async with client_for(zoo) as client:
        for body in bodies:
            started = time.process_time()
            r = await client.post(url, content=body)
            cpu = time.process_time() - started
            assert r.status_code == 400, (body[:120], r.text)
            assert "error" in r.json()
            assert cpu < 1.0, f"{cpu:.2f} s of CPU to refuse {len(body)} bytes"


# ---- cost bounded by design --------------------------------------------------------------------------


def _cheap(data: bytes, pp: Preprocessing) -> float:
    started = time.process_time()
    tensor = to_tensor(decode(data, max_pixels=40_000_000, draft_size=pp.resize), pp)
    assert tensor.shape == (len(pp.mean), pp.crop, pp.crop)
    return time.process_time() - started


@pytest.mark.parametrize(
    ("width", "height", "colour"),
    [(1, 1_000_000, 0), (1_000_000, 1, 0), (3, 300_000, 2), (200_000, 7, 6), (2, 2_000_000, 4)],
)
def test_thin_images_cost_what_their_pixels_cost(width: int, height: int, colour: int) -> None:
    # The shorter side is resized to the model's size: the resized image would be 28 x 28,000,000.
    data = hostile.grey_png(width, height, colour=colour)
    for pp in (GREY, RGB):
        assert _cheap(data, pp) < 0.5


def test_only_the_first_page_of_a_tiff_is_read() -> None:
    for pages in (2, 24_000):
        assert _cheap(hostile.tiff(4, 4, bits=[8], pages=pages), GREY) < 0.2


def test_jpeg_scans_are_counted_before_decoding() -> None:
    progressive = encode(Image.new("RGB", (64, 64), (9, 99, 199)), "JPEG", progressive=True)
    assert 2 <= jpeg_scans(progressive) <= MAX_JPEG_SCANS
    assert jpeg_scans(encode(Image.new("L", (64, 64)), "JPEG")) == 1
    assert _cheap(progressive, GREY) < 0.2
    for scans, size in ((2000, 256), (MAX_JPEG_SCANS + 1, 64), (200, 2048)):
        data = hostile.many_scans_jpeg(scans, size)
        started = time.process_time()
        with pytest.raises(ImageTooLarge):
            decode(data, max_pixels=40_000_000, draft_size=28)
        assert time.process_time() - started < 0.2


_PEAK = """
import json, resource, sys, time
from service.images.preprocess import decode, to_tensor
from service.core.registry import Preprocessing
from tests.security import hostile
pp = Preprocessing(color_mode="L", resize=28, crop=28, interpolation="bilinear", mean=[0.5], std=[0.25])
cases = {
    "16-bit": hostile.tiff(6000, 6000, bits=[16], rows_per_strip=100),
    "float": hostile.tiff(6000, 6000, bits=[32], sample_format=3, rows_per_strip=100),
    "32-bit int": hostile.tiff(4000, 4000, bits=[32], sample_format=2, rows_per_strip=100),
    "RGBA PNG": hostile.grey_png(4000, 4000, colour=6),
}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for name, data in cases.items():
    started = time.process_time()
    to_tensor(decode(data, max_pixels=40_000_000, draft_size=28), pp)
    out[name] = [time.process_time() - started, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024]
print(json.dumps(out))
"""


def test_wide_sample_images_take_no_float64_copies(repo_root: Path) -> None:
    # 6000x6000 sparse TIFFs of a few kilobytes: 16-bit, float, 32-bit; float64 copies took 1.2 GB.
    done = subprocess.run(
        [sys.executable, "-c", _PEAK], capture_output=True, cwd=repo_root, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    for name, (cpu, peak_rise) in json.loads(done.stdout).items():
        assert peak_rise < 256 * 2**20, f"{name}: peak RSS rose {peak_rise / 2**20:.0f} MiB"
        assert cpu < 2.0, f"{name}: {cpu:.2f} s of CPU"
