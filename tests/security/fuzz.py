"""A mutation fuzzer of the image path: valid images of every accepted format (and of refused ones, and
containers around accepted ones), mutated (byte flips, chunk and segment splicing, header field
changes, ancillary chunks and segments repeated, fill bytes, an MPO wrapper), straight through decode +
preprocessing; and of gRPC inference messages (shapes, datatypes, typed and raw contents mutated),
through the gRPC decoder and REST's tensor guards.

A case fails when it raises anything but a mapped 4xx ServiceError (a 400 V2Error for gRPC), takes more than --max-cpu-s of CPU,
or raises the process's peak RSS more than --max-rss-mib above its start. A failing case is saved under
tests/security/fuzz_cases/ (`.bin` an image, `.pb` a gRPC message; tests/security/test_fuzz.py replays
every saved case).

    python -m tests.security.fuzz --seconds 300 --seed 1     # or: make fuzz FUZZ_SECONDS=300
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import resource
import signal
import struct
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import numpy as np
from PIL import Image

from service.core.errors import ServiceError, problem_of
from service.core.registry import Preprocessing
from service.core.settings import Settings
from service.images.preprocess import decode, to_tensor
from tests.security import hostile

CASES_DIR = Path(__file__).resolve().parent / "fuzz_cases"
PREPROCESSING = [
    Preprocessing(color_mode="L", resize=28, crop=28, interpolation="bilinear", mean=[0.5], std=[0.25]),
    Preprocessing(
        color_mode="RGB", resize=256, crop=224, interpolation="bicubic", mean=[0.5] * 3, std=[0.25] * 3
    ),
]


# ---- seeds: every accepted format, several modes ----------------------------------------------------------


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=40)
    return [
        _save(rgb, "JPEG"),
        _save(rgb, "JPEG", progressive=True),
        _save(rgb.convert("L"), "JPEG"),
        _save(rgb.convert("CMYK"), "JPEG"),
        _save(rgb, "PNG"),
        _save(rgb.convert("RGBA"), "PNG"),
        _save(rgb.convert("P"), "PNG"),
        _save(rgb.convert("LA"), "PNG"),
        _save(Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)), "PNG"),
        gif.getvalue(),
        _save(rgb, "WEBP"),
        _save(rgb.convert("RGBA"), "WEBP", lossless=True),
        _save(rgb, "BMP"),
        _save(rgb.convert("P"), "BMP"),
        _save(rgb, "TIFF"),
        _save(rgb, "TIFF", compression="tiff_deflate"),
        _save(rgb.convert("L"), "TIFF", compression="packbits"),
        hostile.la_tiff(),
        hostile.tiff(16, 16, bits=[16], rows_per_strip=4),
        hostile.tiff(16, 16, bits=[32], sample_format=3),
        hostile.tiff(4, 4, bits=[8], pages=3),
        # the second pass: containers, ancillary data, refused formats
        _mpo(rgb),
        hostile.iccp_png(1, 4096),
        _with_metadata(_save(rgb.convert("L"), "PNG")),
        _save(rgb, "JPEG", exif=_exif()),
        hostile.rle_bmp(16, 16, 20),
        hostile.eps_comments(2048),
        hostile.ppm_comments(2048),
    ]


def _mpo(rgb: Image.Image) -> bytes:
    buf = io.BytesIO()
    rgb.save(buf, "MPO", save_all=True, append_images=[rgb.rotate(180)])
    return buf.getvalue()


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "fuzz"
    return exif.tobytes()


def _with_metadata(png: bytes) -> bytes:
    """A PNG with a text, a compressed text, an international text and an EXIF chunk before its data."""
    extra = (
        _chunk(b"tEXt", b"Comment\0fuzz")
        + _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"fuzz" * 100))
        + _chunk(b"iTXt", b"Comment\0\0\0\0\0fuzz")
        + _chunk(b"eXIf", _exif())
    )
    return png[:33] + extra + png[33:]


# ---- mutations ----------------------------------------------------------------------------------------------

EXTREMES = [0, 1, 2, 255, 256, 65535, 65536, 1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]


def _png_chunks(data: bytes) -> list[bytes] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return chunks


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _jpeg_segments(data: bytes) -> list[bytes] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    cuts = [m.start() for m in re.finditer(rb"\xff[\xc0-\xfe]", data)]
    return [data[a:b] for a, b in zip(cuts, [*cuts[1:], len(data)], strict=True)] if cuts else None


def splice(data: bytes, donor: bytes, rng: random.Random) -> bytes:
    """Drop, duplicate, swap or borrow whole PNG chunks or JPEG segments (else byte ranges)."""
    parts = _png_chunks(data) or _jpeg_segments(data)
    other = _png_chunks(donor) or _jpeg_segments(donor)
    if not parts:
        a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
        c, d = sorted(rng.randrange(len(donor) + 1) for _ in range(2))
        return data[:a] + donor[c:d] + data[b:]
    head = data[:8] if data.startswith(b"\x89PNG") else b""
    i = rng.randrange(len(parts))
    op = rng.choice(["drop", "dup", "swap", "borrow"])
    if op == "drop":
        del parts[i]
    elif op == "dup":
        parts.insert(i, parts[i] * rng.choice([1, 2, 50]))
    elif op == "swap":
        j = rng.randrange(len(parts))
        parts[i], parts[j] = parts[j], parts[i]
    elif other:
        parts.insert(i, rng.choice(other))
    return head + b"".join(parts)


def header_field(data: bytes, rng: random.Random) -> bytes:
    """Set a width, height, depth or count field of the format's header to an extreme value."""
    value = rng.choice(EXTREMES)
    out = bytearray(data)
    if data.startswith(b"\x89PNG") and len(data) > 33:
        ihdr = bytearray(data[16:29])
        field = rng.choice([0, 4, 8, 9, 12])
        if field < 8:
            ihdr[field : field + 4] = struct.pack(">I", value & 0xFFFFFFFF)
        else:
            ihdr[field] = value & 0xFF
        return data[:8] + _chunk(b"IHDR", bytes(ihdr)) + data[33:]
    if data.startswith(b"\xff\xd8"):
        sof = next((m.start() for m in re.finditer(rb"\xff[\xc0-\xc2]", data)), None)
        if sof is not None and sof + 9 <= len(data):
            pos = sof + rng.choice([5, 7])
            out[pos : pos + 2] = struct.pack(">H", value & 0xFFFF)
            return bytes(out)
    if data.startswith(b"BM") and len(data) > 30:
        pos = rng.choice([18, 22, 28])
        out[pos : pos + 4] = struct.pack("<I", value & 0xFFFFFFFF)
        return bytes(out)
    if data.startswith(b"GIF") and len(data) > 10:
        pos = rng.choice([6, 8])
        out[pos : pos + 2] = struct.pack("<H", value & 0xFFFF)
        return bytes(out)
    if data[:4] in (b"II*\0", b"MM\0*") and len(data) > 16:
        # overwrite the value of a random entry of the first IFD
        order = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack(order + "I", data[4:8])[0]
        if ifd + 2 <= len(data):
            count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
            if count:
                entry = ifd + 2 + 12 * rng.randrange(count)
                if entry + 12 <= len(data):
                    out[entry + 8 : entry + 12] = struct.pack(order + "I", value & 0xFFFFFFFF)
                    return bytes(out)
    return bytes(out)


def bytes_mutation(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            break
        pos = rng.randrange(len(out))
        op = rng.random()
        if op < 0.4:
            out[pos] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            out[pos] = rng.choice([0, 0xFF, 0x7F, 0x80])
        elif op < 0.8:
            del out[pos : pos + rng.randint(1, 64)]
        else:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


_ANCILLARY = [b"iCCP", b"zTXt", b"iTXt", b"tEXt", b"eXIf", b"sPLT", b"zzZz"]


def repeat_ancillary(data: bytes, rng: random.Random) -> bytes:
    """Repeat one ancillary PNG chunk (or JPEG APP/COM segment) up to thousands of times."""
    times = rng.choice([2, 64, 65, 1000, 5000])
    parts = _png_chunks(data)
    if parts is not None and len(parts) > 1:
        extra = [p for p in parts if p[4:8] in _ANCILLARY] or [
            _chunk(rng.choice(_ANCILLARY), b"k\0\0" + zlib.compress(b"\0" * rng.choice([16, 1 << 16])))
        ]
        return data[:8] + parts[0] + rng.choice(extra) * times + b"".join(parts[1:])
    segments = _jpeg_segments(data)
    if segments is not None:
        app = [s for s in segments if 0xE0 <= s[1] <= 0xEF or s[1] == 0xFE] or [b"\xff\xfe\x00\x04ok"]
        return data[:2] + rng.choice(app) * times + data[2:]
    return data


def fill_bytes(data: bytes, rng: random.Random) -> bytes:
    """Fill (0xFF) or junk bytes where a marker or chunk should start."""
    pos = 2 if data.startswith(b"\xff\xd8") else rng.randrange(len(data) + 1)
    return (
        data[:pos] + rng.choice([b"\xff", b"\x00", b"\xff\x00"]) * rng.choice([1, 1000, 100_000]) + data[pos:]
    )


def mpo_wrap(data: bytes, rng: random.Random) -> bytes:
    """A JPEG given an MP index claiming more pictures (Pillow opens it as MPO)."""
    if not data.startswith(b"\xff\xd8"):
        return data
    frames = [Image.new("RGB", (8, 8)) for _ in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    mpo = buf.getvalue()
    at = mpo.find(b"\xff\xe2")
    segment = mpo[at : at + 2 + int.from_bytes(mpo[at + 2 : at + 4], "big")]
    return data[:2] + segment + data[2:]


def mutate(data: bytes, pool: list[bytes], rng: random.Random) -> bytes:
    ops: list[Callable[[bytes], bytes]] = [
        lambda d: bytes_mutation(d, rng),
        lambda d: splice(d, rng.choice(pool), rng),
        lambda d: header_field(d, rng),
        lambda d: repeat_ancillary(d, rng),
        lambda d: fill_bytes(d, rng),
        lambda d: mpo_wrap(d, rng),
    ]
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(ops)(data)
    return data


# ---- gRPC messages ------------------------------------------------------------------------------------------

_DATATYPES = ["FP32", "FP16", "INT8", "INT64", "UINT64", "BOOL", "BYTES", "BF16", "fp32", ""]
_DIMENSIONS = [-1, 0, 1, 28, 2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1]


def grpc_seeds() -> list[bytes]:
    return [
        hostile.grpc_infer("model", [1, 1, 28, 28], raw=bytes(4 * 784)),
        hostile.grpc_infer("model", [1, 1, 28, 28], fp32=784),
        hostile.grpc_infer("model", [2, 3], fp32=6),
    ]


def mutate_message(data: bytes, rng: random.Random) -> bytes:
    """A ModelInferRequest with its shape, datatype, contents or names changed."""
    from tritonclient.grpc import service_pb2 as pb

    message = pb.ModelInferRequest.FromString(data)
    spec = message.inputs[0] if message.inputs else message.inputs.add(name="input")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if op == 0:
            spec.ClearField("shape")
            spec.shape.extend(rng.choice(_DIMENSIONS) for _ in range(rng.choice([0, 1, 2, 4, 33])))
        elif op == 1:
            spec.datatype = rng.choice(_DATATYPES)
        elif op == 2:
            spec.contents.int_contents.extend([rng.choice([0, -(2**31), 2**31 - 1])] * rng.choice([1, 784]))
        elif op == 3:
            message.raw_input_contents.append(bytes(rng.choice([0, 3, 4, 3136])))
        elif op == 4:
            message.inputs.add().CopyFrom(spec)  # the same name twice
        elif op == 5:
            spec.name = rng.choice(["", "input", "x" * 10_000])
        else:
            spec.parameters["shared_memory_region"].string_param = "r"
    return bytes(message.SerializeToString())


def run_grpc_case(data: bytes) -> str | None:
    """None when the gRPC decoder and the guards refuse the message with a 400, or accept it."""
    from tritonclient.grpc import service_pb2 as pb

    from service.grpc import tensors
    from service.v2.errors import V2Error

    try:
        tensors.decode(pb.ModelInferRequest.FromString(data), datatype="FP32")
    except V2Error as exc:
        return (
            None
            if exc.status == 400 and len(exc.message) < 1024
            else f"V2Error {exc.status}: {exc.message[:200]}"
        )
    except BaseException as exc:  # noqa: BLE001  (anything unmapped is the finding)
        return f"unmapped {type(exc).__name__}: {exc}"
    return None


# ---- running cases ------------------------------------------------------------------------------------------


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(data: bytes, *, max_cpu_s: float, max_pixels: int) -> str | None:
    """None when the case passes, else what went wrong."""
    started = time.process_time()
    signal.setitimer(signal.ITIMER_REAL, max(5.0, 5 * max_cpu_s))
    try:
        for pp in PREPROCESSING:
            try:
                tensor = to_tensor(decode(data, max_pixels=max_pixels, draft_size=pp.resize), pp)
            except ServiceError as exc:
                status = problem_of(exc).status
                if not 400 <= status < 500:
                    return f"{type(exc).__name__} -> {status}: {exc.detail}"
                continue
            if tensor.shape != (len(pp.mean), pp.crop, pp.crop) or not np.isfinite(tensor).all():
                return f"bad tensor {tensor.shape}"
    except _Timeout:
        return "timed out"
    except BaseException as exc:  # noqa: BLE001  (anything unmapped is the finding)
        return f"unmapped {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    cpu = time.process_time() - started
    return f"{cpu:.2f} s of CPU" if cpu > max_cpu_s else None


def save_case(data: bytes, why: str, suffix: str = ".bin") -> Path:
    CASES_DIR.mkdir(exist_ok=True)
    path = CASES_DIR / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(why + "\n")
    return path


def fuzz(*, seconds: float, seed: int, max_cpu_s: float, max_rss_mib: float, save: bool) -> dict[str, object]:
    signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore")  # Pillow's notes on corrupt EXIF and truncated tags: expected here
    rng = random.Random(seed)
    pool = seeds()
    max_pixels = Settings().max_image_pixels
    for data in pool:  # warm-up: plugins imported, allocator arenas made
        run_case(data, max_cpu_s=60, max_pixels=max_pixels)
    base = _peak_bytes()
    failures: list[dict[str, str]] = []
    executions = 0
    started = time.monotonic()
    messages = grpc_seeds()
    while time.monotonic() - started < seconds:
        executions += 1
        if executions % 4 == 0:  # one case in four is a gRPC message
            message = mutate_message(rng.choice(messages), rng)
            why = run_grpc_case(message)
            if why is not None:
                saved = str(save_case(message, why, ".pb")) if save else ""
                failures.append({"why": why, "saved": saved})
            continue
        data = mutate(rng.choice(pool), pool, rng)
        why = run_case(data, max_cpu_s=max_cpu_s, max_pixels=max_pixels)
        rise = _peak_bytes() - base
        if why is None and rise > max_rss_mib * 2**20:
            why = f"peak RSS rose {rise / 2**20:.0f} MiB"
        if why is not None:
            saved = str(save_case(data, why)) if save else ""
            failures.append({"why": why, "saved": saved})
            if why.startswith("peak RSS"):
                break  # the peak never falls again: later cases could not be judged
    elapsed = time.monotonic() - started
    return {
        "seed": seed,
        "executions": executions,
        "seconds": round(elapsed, 2),
        "executions_per_s": round(executions / elapsed, 1),
        "peak_rss_rise_mib": round((_peak_bytes() - base) / 2**20, 1),
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cpu-s", type=float, default=2.0)
    parser.add_argument("--max-rss-mib", type=float, default=256.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    report = fuzz(
        seconds=args.seconds,
        seed=args.seed,
        max_cpu_s=args.max_cpu_s,
        max_rss_mib=args.max_rss_mib,
        save=not args.no_save,
    )
    print(json.dumps(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
