"""A mutation fuzzer of the image path: valid images of every accepted format, mutated (byte flips,
chunk and segment splicing, header field changes), straight through decode + preprocessing.

A case fails when it raises anything but a mapped 4xx ServiceError, takes more than --max-cpu-s of CPU,
or raises the process's peak RSS more than --max-rss-mib above its start. A failing case is saved under
tests/security/fuzz_cases/ (and tests/security/test_fuzz.py replays every saved case).

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

from service.errors import ServiceError, problem_of
from service.preprocess import decode, to_tensor
from service.registry import Preprocessing
from service.settings import Settings
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
    ]


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


def mutate(data: bytes, pool: list[bytes], rng: random.Random) -> bytes:
    ops: list[Callable[[bytes], bytes]] = [
        lambda d: bytes_mutation(d, rng),
        lambda d: splice(d, rng.choice(pool), rng),
        lambda d: header_field(d, rng),
    ]
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(ops)(data)
    return data


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


def save_case(data: bytes, why: str) -> Path:
    CASES_DIR.mkdir(exist_ok=True)
    path = CASES_DIR / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
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
    while time.monotonic() - started < seconds:
        data = mutate(rng.choice(pool), pool, rng)
        why = run_case(data, max_cpu_s=max_cpu_s, max_pixels=max_pixels)
        executions += 1
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
