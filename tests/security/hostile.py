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


def mpo_scans_jpeg(scans: int) -> bytes:
    """`many_scans_jpeg` with a multi-picture (MPO) index claiming a second picture: Pillow opens it as MPO."""
    frames = [Image.new("RGB", (16, 16), c) for c in ((1, 2, 3), (3, 2, 1))]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    mpo = buf.getvalue()
    at = mpo.find(b"\xff\xe2")  # the APP2 segment that holds the MP index
    segment = mpo[at : at + 2 + int.from_bytes(mpo[at + 2 : at + 4], "big")]
    jpeg = many_scans_jpeg(scans)
    return jpeg[:2] + segment + jpeg[2:]


def junk_jpeg(junk: int) -> bytes:
    """A JPEG with `junk` fill bytes (0xFF) before its first marker after SOI: Pillow reads them one by one."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "JPEG")
    data = buf.getvalue()
    return data[:2] + b"\xff" * junk + data[2:]


def gif_comment_blocks(blocks: int) -> bytes:
    """An 8x8 GIF whose comment extension has `blocks` sub-blocks of one byte each."""
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF")
    gif = buf.getvalue()
    end = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    return gif[:end] + b"\x21\xfe" + b"\x01c" * blocks + b"\x00" + gif[end:]


# ---- BMP, and formats the service refuses ----------------------------------------------------------------


def rle_bmp(width: int = 10_000, height: int = 3_000, rows: int = 3_000) -> bytes:
    """A run-length (RLE8) BMP that Pillow decodes in pure Python: per row, a run of one pixel and an
    end of line, which Pillow pads one byte per loop iteration (12 KB: 30 M iterations)."""
    data = (b"\x01\x00" + b"\x00\x00") * rows + b"\x00\x01"
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    palette = bytes(4 * 256)
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + header + palette + data


def eps_comments(size: int) -> bytes:
    """An EPS header of `size` bytes of comment lines: refused, but Pillow reads every line to name it."""
    line = b"%%Hostile: " + b"x" * 60 + b"\n"
    return b"%!PS-Adobe-3.0 EPSF-3.0\n" + line * (size // len(line)) + b"%%BoundingBox: 0 0 1 1\n"


def ppm_comments(size: int) -> bytes:
    """A PPM whose header holds `size` bytes of comments."""
    return b"P6\n" + b"#" * size + b"\n1 1\n255\n\0\0\0"


def iccp_png(chunks: int, inflated: int = 1 << 20) -> bytes:
    """A 28x28 PNG with `chunks` colour-profile (iCCP) chunks, each inflating to `inflated` bytes."""
    png = grey_png(28, 28)
    profile = b"icc\0\0" + zlib.compress(b"\0" * inflated, 9)
    return png[:33] + _chunk(b"iCCP", profile) * chunks + png[33:]


def bomb_warning_png() -> bytes:
    """A PNG header over Pillow's own decompression-bomb threshold (89 Mpx; it warns) and our cap."""
    return grey_png(10_000, 10_000)


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


def multipart_images(images: list[bytes], media: str = "image/png") -> tuple[bytes, str]:
    boundary = "hostileboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
        f"Content-Type: {media}\r\n\r\n".encode()
        + image
        + b"\r\n"
        for i, image in enumerate(images)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


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


def v2_bytes_header(elements: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [elements],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 * elements},
                }
            ]
        }
    ).encode()


def v2_bytes_body(elements: int) -> bytes:
    """A binary /v2 body of `elements` empty BYTES elements (4 bytes each) for a model that takes FP32."""
    return v2_bytes_header(elements) + b"\0" * (4 * elements)


# ---- gRPC ------------------------------------------------------------------------------------------------


def grpc_infer(model: str, shape: list[int], *, fp32: int = 0, raw: bytes | None = None) -> bytes:
    """A serialized ModelInferRequest: `fp32` typed zeros, or one raw input."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    spec = request.inputs.add(name="input", datatype="FP32", shape=shape)
    if raw is not None:
        request.raw_input_contents.append(raw)
    else:
        spec.contents.fp32_contents.extend(np.zeros(fp32, np.float32).tolist())
    return bytes(request.SerializeToString())


# ---- the classes, as scripts/hostile.py and the soak send them -------------------------------------------


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str  # "/classify", "/compare", "/v2/models/{model}/infer", or "grpc" (ModelInfer)
    body: Callable[[], bytes]  # for "grpc": a ModelInferRequest, its model name "{model}"
    content_type: str = "image/png"
    headers: tuple[tuple[str, str], ...] = ()


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


def _multipart(name: str, images: list[bytes]) -> Hostile:
    body, media = multipart_images(images)
    return Hostile(name, "/classify", lambda: body, media)


def _grpc(name: str, shape: list[int], **kwargs: object) -> Hostile:
    return Hostile(name, "grpc", lambda: grpc_infer("{model}", shape, **kwargs))  # type: ignore[arg-type]


# The second pass: classes a second corpus found (docs/security.md, "Second pass").
SECOND_PASS: list[Hostile] = [
    Hostile("MPO around a 2,000-scan JPEG", "/classify", lambda: mpo_scans_jpeg(2000), "image/jpeg"),
    Hostile("JPEG with 4 MB of fill bytes", "/classify", lambda: junk_jpeg(4_000_000), "image/jpeg"),
    Hostile("BMP RLE8, 13 KB", "/classify", rle_bmp, "image/bmp"),
    Hostile("GIF, 7 M comment sub-blocks", "/classify", lambda: gif_comment_blocks(7_000_000), "image/gif"),
    Hostile("PNG 28x28, 3,000 iCCP chunks", "/classify", lambda: iccp_png(3000)),
    Hostile("EPS, 4 MB of header comments", "/classify", lambda: eps_comments(4_000_000)),
    Hostile("PPM, 4 MB of header comments", "/classify", lambda: ppm_comments(4_000_000)),
    Hostile("PNG 10,000x10,000 (bomb warning)", "/classify", bomb_warning_png),
    _multipart("multipart 24 x 36 Mpx PNG", [grey_png(6000, 6000)] * 24),
    Hostile("compare, one 36 Mpx RGB PNG", "/compare", lambda: grey_png(6000, 6000, colour=2)),
    Hostile(
        "v2 BYTES, 3.5 M empty elements",
        "/v2/models/{model}/infer",
        lambda: v2_bytes_body(3_500_000),
        "application/octet-stream",
        (("inference-header-content-length", str(len(v2_bytes_header(3_500_000)))),),
    ),
    _grpc("gRPC shape [0, 2**62, 2**62]", [0, 2**62, 2**62], raw=b""),
    _grpc("gRPC 3.9 M typed FP32", [3_900_000], fp32=3_900_000),
    Hostile(
        "gRPC 20 KB model name",
        "grpc",
        lambda: grpc_infer("m" * 20_000, [1, 1, 28, 28], raw=bytes(4 * 784)),
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
