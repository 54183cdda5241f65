"""Crafted hostile inputs, one generator per class: small uploads whose cost (CPU, memory) or whose
exceptions once escaped the service's bounds. Used by the tests, the fuzzer's seeds, `make soak` and
scripts/hostile.py (which measures each class against a real server)."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

# ---- PNG -------------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(width: int, height: int, *, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A valid PNG of zero samples; all-zero rows deflate about a thousandfold."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)
    deflate = zlib.compressobj(9)
    per_block = max(1, (1 << 22) // len(row))  # compress about 4 MB of rows at a time
    blocks = [deflate.compress(row * min(per_block, height - y)) for y in range(0, height, per_block)]
    data = b"".join(blocks) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


# ---- TIFF ------------------------------------------------------------------------------------------------

_SHORT, _LONG = 3, 4


def _ifd(entries: dict[int, tuple[int, list[int]]], next_offset: int, data_at: int) -> tuple[bytes, bytes]:
    """One IFD (entries sorted by tag) and the out-of-line values it points to, placed at `data_at`."""
    head = struct.pack("<H", len(entries))
    extra = b""
    body = b""
    extra_at = data_at
    for tag in sorted(entries):
        kind, values = entries[tag]
        fmt = "<H" if kind == _SHORT else "<I"
        packed = b"".join(struct.pack(fmt, v) for v in values)
        if len(packed) <= 4:
            body += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, kind, len(values), extra_at + len(extra))
            extra += packed
    return head + body + struct.pack("<I", next_offset), extra


def tiff(
    width: int,
    height: int,
    *,
    bits: list[int],
    sample_format: int = 1,
    extra_samples: int | None = None,
    photometric: int = 1,
    rows_per_strip: int | None = None,
    pages: int = 1,
) -> bytes:
    """A little-endian TIFF whose strips are deflate-compressed zeros. Every strip of every page points at
    the same compressed bytes, so a 6000x6000 float image or 24,000 chained pages take a few kilobytes."""
    rows = rows_per_strip or height
    strip = zlib.compress(b"\0" * (width * rows * sum(bits) // 8), 9)
    strips = (height + rows - 1) // rows
    out = bytearray(b"II*\0" + struct.pack("<I", 8 + len(strip)))
    out += strip
    strip_at = 8
    for page in range(pages):
        entries: dict[int, tuple[int, list[int]]] = {
            256: (_LONG, [width]),
            257: (_LONG, [height]),
            258: (_SHORT, bits),
            259: (_SHORT, [8]),  # deflate
            262: (_SHORT, [photometric]),
            273: (_LONG, [strip_at] * strips),
            277: (_SHORT, [len(bits)]),
            278: (_LONG, [rows]),
            279: (_LONG, [len(strip)] * strips),
            339: (_SHORT, [sample_format] * len(bits)),
        }
        if extra_samples is not None:
            entries[338] = (_SHORT, [extra_samples])
        here = len(out)
        size = 2 + 12 * len(entries) + 4
        provisional, extra = _ifd(entries, 0, here + size)
        next_at = here + size + len(extra) if page + 1 < pages else 0
        ifd, extra = _ifd(entries, next_at, here + size)
        out += ifd + extra
        assert len(provisional) == len(ifd)
    return bytes(out)


def la_tiff() -> bytes:
    """Greyscale with premultiplied alpha (ExtraSamples=1): Pillow opens it as mode `La`."""
    return tiff(8, 8, bits=[8, 8], extra_samples=1)


# ---- JPEG ------------------------------------------------------------------------------------------------


def many_scans_jpeg(scans: int, size: int = 2048) -> bytes:
    """A progressive JPEG whose last scan (with the tables before it) is repeated `scans` times."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (120, 60, 200)).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    sos = [m.start() for m in re.finditer(b"\xff\xda", data)]
    last = sos[-1]
    dht = data.rfind(b"\xff\xc4", 0, last)
    start = dht if dht > sos[-2] else last
    scan = data[start:-2]  # up to EOI
    return data[:-2] + scan * scans + b"\xff\xd9"


# ---- multipart -------------------------------------------------------------------------------------------


def multipart_with_charset(image: bytes, charset: str, filename: bytes) -> tuple[bytes, str]:
    """A multipart body with a client-chosen charset, in which `filename` decodes to a lone surrogate."""
    boundary = "hostileboundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}; charset={charset}"


# ---- /v2 -------------------------------------------------------------------------------------------------


def v2_body(shape: list[int], data_json: str, datatype: str = "FP32", name: str = "input") -> bytes:
    return (
        f'{{"inputs":[{{"name":{json.dumps(name)},"shape":{json.dumps(shape)},'
        f'"datatype":"{datatype}","data":{data_json}}}]}}'
    ).encode()


def deep_v2_body(depth: int, elements: int) -> bytes:
    """Tensor data nested `depth` deep around `elements` zeros, with a shape that does not match."""
    flat = b"0," * (elements - 1) + b"0"
    data = b"[" * depth + flat + b"]" * depth
    return b'{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":' + data + b"}]}"


# ---- the classes, as scripts/hostile.py and the soak send them -------------------------------------------


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str  # "/classify" or "/v2/models/{model}/infer"
    body: Callable[[], bytes]
    content_type: str = "image/png"


def _thin(width: int, height: int) -> Callable[[], bytes]:
    return lambda: grey_png(width, height)


def _charset(charset: str, filename: bytes) -> Hostile:
    tiny = grey_png(28, 28)
    body, media = multipart_with_charset(tiny, charset, filename)
    return Hostile(f"multipart charset={charset}", "/classify", lambda: body, media)


CLASSES: list[Hostile] = [
    Hostile("La TIFF (premultiplied alpha)", "/classify", la_tiff, "image/tiff"),
    _charset("utf-7", b"+2AA-.png"),
    _charset("unicode_escape", b"\\ud800.png"),
    Hostile(
        "v2 shape [0, 2**62, 2**62]", "/v2/models/{model}/infer", lambda: v2_body([0, 2**62, 2**62], "[]")
    ),
    Hostile("v2 shape [0, 10**30]", "/v2/models/{model}/infer", lambda: v2_body([0, 10**30], "[]")),
    Hostile("v2 FP32 literal 10**400", "/v2/models/{model}/infer", lambda: v2_body([1], f"[{10**400}]")),
    Hostile("PNG 1x1,000,000", "/classify", _thin(1, 1_000_000)),
    Hostile("PNG 1,000,000x1", "/classify", _thin(1_000_000, 1)),
    Hostile("PNG 1x40,000,000", "/classify", _thin(1, 40_000_000)),
    Hostile(
        "TIFF 6000x6000 16-bit",
        "/classify",
        lambda: tiff(6000, 6000, bits=[16], rows_per_strip=100),
        "image/tiff",
    ),
    Hostile(
        "TIFF 6000x6000 float",
        "/classify",
        lambda: tiff(6000, 6000, bits=[32], sample_format=3, rows_per_strip=100),
        "image/tiff",
    ),
    Hostile("TIFF 24,000 pages", "/classify", lambda: tiff(1, 1, bits=[8], pages=24_000), "image/tiff"),
    Hostile("JPEG 2,000 scans", "/classify", lambda: many_scans_jpeg(2000), "image/jpeg"),
    Hostile(
        "v2 JSON 31 deep, 6 M elements",
        "/v2/models/{model}/infer",
        lambda: deep_v2_body(31, 6_000_000),
        "application/json",
    ),
]


def expensive_uploads() -> list[tuple[bytes, str]]:
    """The image classes that cost the most to refuse or answer: for fairness tests and the soak."""
    return [
        (grey_png(6000, 6000), "image/png"),
        (tiff(6000, 6000, bits=[16], rows_per_strip=100), "image/tiff"),
        (many_scans_jpeg(2000), "image/jpeg"),
        (grey_png(1, 1_000_000), "image/png"),
    ]


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()
