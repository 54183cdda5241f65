"""Soak test: N minutes of mixed traffic against a real `python -m service`, then a report.

Nine requests in ten are valid (PNG, JPEG, WebP, GIF images of random sizes, one to three per request,
multipart or raw); one in ten is malformed (garbage, truncated or unsupported images, pixel bombs, bodies
over the upload cap, broken multipart, unknown models, bad parameters); and --hostile-share of them are
the hostile classes of tests/security/hostile.py (thin, wide-sample, many-page and many-scan images, odd
TIFF modes, client-chosen charsets, /v2 shapes and number literals, deep JSON). The server's RSS is
sampled throughout, and the latency of every valid request is kept (p50, p99 in the report). It passes
when the RSS grows by less than --max-growth-mib from the end of the warm-up to the end, and no request
gets a 5xx (valid ones: none at all; malformed and hostile ones: none but 503).

    python scripts/soak.py --minutes 10          # or: make soak SOAK_MINUTES=10
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MIB = 1 << 20

from convzoo.launch import Launch, LaunchError, Probe, Running, start  # noqa: E402
from tests.security.hostile import CLASSES, SECOND_PASS, Hostile, deep_v2_body  # noqa: E402


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---- traffic --------------------------------------------------------------------------------------------


MODES = {
    "PNG": ["RGB", "L", "RGBA", "P", "LA"],
    "JPEG": ["RGB", "L", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
    "GIF": ["P", "L"],
}
MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def _image(rng: random.Random) -> tuple[bytes, str]:
    w, h = rng.randint(1, 640), rng.randint(1, 480)
    arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    fmt = rng.choice(list(MODES))
    image = Image.fromarray(arr, "RGB").convert(rng.choice(MODES[fmt]))
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue(), MEDIA[fmt]


def _png_bomb(side: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    data = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@dataclass
class Traffic:
    rng: random.Random
    max_upload: int
    model: str = ""  # a loaded model, for the hostile /v2 requests
    hostile_share: float = 0.05
    bomb: bytes = field(default_factory=lambda: _png_bomb(20_000))
    hostile_cases: list[tuple[Hostile, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The classes whose body fits under the upload cap (bigger bodies are the "too-large" kind's), and
        # deep JSON as large as the cap allows.
        # (of the second corpus, the single-request /classify ones: the others need a query or gRPC)
        cases = [(h, h.body()) for h in CLASSES + [h for h in SECOND_PASS if h.path == "/classify"]]
        deep = Hostile("v2 JSON 31 deep, at the upload cap", "/v2/models/{model}/infer", lambda: b"")
        cases.append((deep, deep_v2_body(31, self.max_upload // 2 - 1000)))
        self.hostile_cases = [(h, body) for h, body in cases if len(body) <= self.max_upload]

    async def hostile(self, client: httpx.AsyncClient) -> tuple[str, httpx.Response]:
        h, body = self.rng.choice(self.hostile_cases)
        r = await client.post(
            h.path.format(model=self.model), content=body, headers={"content-type": h.content_type}
        )
        return h.name, r

    async def valid(self, client: httpx.AsyncClient) -> httpx.Response:
        images = [_image(self.rng) for _ in range(self.rng.choice([1, 1, 1, 2, 3]))]
        params = {"top_k": str(self.rng.randint(1, 5))}
        if len(images) == 1 and self.rng.random() < 0.3:
            data, media = images[0]
            return await client.post(
                "/classify", params=params, content=data, headers={"content-type": media}
            )
        files = [("file", (f"{i}.img", data, media)) for i, (data, media) in enumerate(images)]
        return await client.post("/classify", params=params, files=files)

    def choose(self) -> str:
        return self.rng.choice(
            [
                "garbage",
                "truncated",
                "unsupported",
                "bomb",
                "too-large",
                "boundary",
                "unknown-model",
                "top-k",
                "empty",
            ]
        )

    async def malformed(self, client: httpx.AsyncClient, kind: str) -> httpx.Response:
        png, _ = _image(self.rng)
        post = client.post
        if kind == "garbage":
            r = await post(
                "/classify", files={"file": ("x.jpg", self.rng.randbytes(self.rng.randint(1, 4096)))}
            )
        elif kind == "truncated":
            r = await post("/classify", files={"file": ("x.png", png[: max(1, len(png) // 3)])})
        elif kind == "unsupported":
            buf = io.BytesIO()
            Image.new("RGB", (16, 16)).save(buf, "ICO")
            r = await post("/classify", files={"file": ("x.ico", buf.getvalue())})
        elif kind == "bomb":
            r = await post("/classify", content=self.bomb, headers={"content-type": "image/png"})
        elif kind == "too-large":
            r = await post(
                "/classify", content=b"\0" * (self.max_upload + 1), headers={"content-type": "image/png"}
            )
        elif kind == "boundary":
            junk = b"\r\n" * self.rng.randint(1, 50_000) + b"junk" * 1000
            r = await post(
                "/classify", content=junk, headers={"content-type": "multipart/form-data; boundary=zz"}
            )
        elif kind == "unknown-model":
            r = await post("/classify", params={"model": "../registry.yaml"}, files={"file": ("x.png", png)})
        elif kind == "top-k":
            r = await post("/classify", params={"top_k": "0"}, files={"file": ("x.png", png)})
        else:
            r = await post("/classify", content=b"", headers={"content-type": "image/png"})
        return r


@dataclass
class Tally:
    by_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    malformed_kinds: Counter[tuple[str, int]] = field(default_factory=Counter)
    hostile_kinds: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    valid_seconds: list[float] = field(default_factory=list)

    def count(self, valid: bool) -> int:
        label = "valid" if valid else "malformed"
        return sum(n for (k, _), n in self.by_status.items() if k == label)


async def drive(url: str, traffic: Traffic, seconds: float, concurrency: int, tally: Tally) -> None:
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            while time.monotonic() < stop:
                draw = traffic.rng.random()
                valid = draw >= 0.1 + traffic.hostile_share
                kind = "valid"
                try:
                    if draw < traffic.hostile_share:
                        kind, r = await traffic.hostile(client)
                        tally.hostile_kinds[(kind, r.status_code)] += 1
                        tally.by_status[("hostile", r.status_code)] += 1
                        continue
                    if valid:
                        t0 = time.perf_counter()
                        r = await traffic.valid(client)
                        tally.valid_seconds.append(time.perf_counter() - t0)
                    else:
                        kind = traffic.choose()
                        r = await traffic.malformed(client, kind)
                        tally.malformed_kinds[(kind, r.status_code)] += 1
                    tally.by_status[("valid" if valid else "malformed", r.status_code)] += 1
                except httpx.HTTPError as exc:
                    if kind == "too-large":  # answered 413 and closed before the body was sent: expected
                        tally.malformed_kinds[(kind + " (closed early)", 0)] += 1
                        tally.by_status[("malformed", 413)] += 1
                    else:
                        tally.transport_errors[f"{kind}: {type(exc).__name__}"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


# ---- the server -----------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, log: Path) -> Running:
    env = {
        **os.environ,
        "CONVZOO_REGISTRY_PATH": str(args.registry),
        "CONVZOO_MODELS_DIR": str(args.models_dir),
        "CONVZOO_MAX_UPLOAD_MB": str(args.max_upload_mb),
        "CONVZOO_LOG_LEVEL": "warning",
    }
    probe = Probe(timeout_s=120, every_s=0.2, request_timeout_s=2)
    launch = Launch(env=env, cwd=REPO, log=log, probe=probe, stop_timeout_s=30, tail_chars=3000)
    try:
        return start(launch)
    except LaunchError as exc:
        raise SystemExit(str(exc)) from exc


def _loaded_model(url: str) -> str:
    index = httpx.post(url + "/v2/repository/index", json={"ready": True}, timeout=10).json()
    return str(index[0]["name"])


async def soak(args: argparse.Namespace, proc: subprocess.Popen[bytes], url: str) -> dict[str, object]:
    traffic = Traffic(
        random.Random(args.seed),
        int(args.max_upload_mb * 1_000_000),
        model=_loaded_model(url),
        hostile_share=args.hostile_share,
    )
    tally = Tally()
    total = args.minutes * 60
    warmup = min(args.warmup_s, total / 2)
    rss_start = rss_bytes(proc.pid)
    await drive(url, traffic, warmup, args.concurrency, tally)
    rss_warm = rss_bytes(proc.pid)
    samples = [(round(warmup), rss_warm)]
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < total - warmup:
        await drive(url, traffic, min(30.0, total - warmup - elapsed), args.concurrency, tally)
        samples.append((round(warmup + time.monotonic() - started), rss_bytes(proc.pid)))
    rss_end = rss_bytes(proc.pid)
    valid_5xx = sum(n for (k, st), n in tally.by_status.items() if k == "valid" and st >= 500)
    malformed_5xx = sum(
        n
        for (k, st), n in tally.by_status.items()
        if k in ("malformed", "hostile") and st >= 500 and st != 503
    )
    latencies = np.asarray(tally.valid_seconds or [0.0]) * 1e3
    growth = rss_end - rss_warm
    ok = (
        growth < args.max_growth_mib * MIB
        and valid_5xx == 0
        and malformed_5xx == 0
        and not tally.transport_errors
        and proc.poll() is None
    )
    return {
        "minutes": args.minutes,
        "warmup_s": warmup,
        "concurrency": args.concurrency,
        "requests": {
            "valid": tally.count(True),
            "malformed": tally.count(False),
            "hostile": sum(n for (k, _), n in tally.by_status.items() if k == "hostile"),
        },
        "valid_latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 1),
            "p99": round(float(np.percentile(latencies, 99)), 1),
            "max": round(float(latencies.max()), 1),
        },
        "rss_mib": {
            "start": round(rss_start / MIB, 1),
            "after_warmup": round(rss_warm / MIB, 1),
            "end": round(rss_end / MIB, 1),
            "growth_after_warmup": round(growth / MIB, 1),
            "samples": [(t, round(b / MIB, 1)) for t, b in samples],
        },
        "status_counts": {f"{k} {st}": n for (k, st), n in sorted(tally.by_status.items())},
        "malformed_by_kind": {f"{k} {st}": n for (k, st), n in sorted(tally.malformed_kinds.items())},
        "hostile_by_kind": {f"{k} {st}": n for (k, st), n in sorted(tally.hostile_kinds.items())},
        "transport_errors": dict(tally.transport_errors),
        "valid_5xx": valid_5xx,
        "malformed_5xx_other_than_503": malformed_5xx,
        "passed": ok,
    }


def print_report(report: dict[str, object]) -> None:
    rss = report["rss_mib"]
    assert isinstance(rss, dict)
    print(
        f"soak: {report['minutes']} min, {report['concurrency']} clients, warm-up {report['warmup_s']:.0f} s"
    )
    print(f"requests: {report['requests']}")
    print(f"valid request latency ms: {report['valid_latency_ms']}")
    print(
        f"RSS MiB: start {rss['start']}, after warm-up {rss['after_warmup']}, end {rss['end']} "
        f"(growth after warm-up {rss['growth_after_warmup']})"
    )
    print("status counts:")
    for key, n in report["status_counts"].items():  # type: ignore[attr-defined]
        print(f"  {key}: {n}")
    print("malformed requests by kind and status (0: connection closed by the server's early 413):")
    for key, n in report["malformed_by_kind"].items():  # type: ignore[attr-defined]
        print(f"  {key}: {n}")
    print("hostile requests by class and status:")
    for key, n in report["hostile_by_kind"].items():  # type: ignore[attr-defined]
        print(f"  {key}: {n}")
    if report["transport_errors"]:
        print(f"transport errors: {report['transport_errors']}")
    print("PASS" if report["passed"] else "FAIL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="RSS growth is measured from its end")
    parser.add_argument("--max-growth-mib", type=float, default=50.0)
    parser.add_argument(
        "--max-upload-mb", type=float, default=2.0, help="a low cap keeps oversized bodies cheap"
    )
    parser.add_argument("--registry", type=Path, default=REPO / "registry.yaml")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hostile-share", type=float, default=0.05, help="of all requests")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with start_server(args, log) as server:
            report = asyncio.run(soak(args, server.process, server.url))
        server_log = log.read_text(errors="replace")
    if "Traceback" in server_log:
        report["passed"] = False
        report["server_tracebacks"] = server_log.count("Traceback")
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
