"""`python -m bench.cli` (make bench-cli): a folder of photos through `convzoo classify` against the
service's own throughput at the same concurrency, side by side on one server (docs/bench-cli.md).

The server's throughput is a plain load loop: httpx, asyncio, one client, `concurrency` workers posting
the same files (read into memory first) to POST /classify, nothing written. The CLI's is the wall time
of the whole `python -m convzoo classify FOLDER -c N -o out.jsonl` process, start-up and writing included.
The two alternate (load, CLI, CLI, load; --rounds 1: load then CLI), so that a drift weighs on both.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import resource
import subprocess
import sys
import time
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench import servers
from convzoo.run import event_loop

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "bench" / "cli"
SOURCES = [ROOT / "docs" / "examples" / "cat.jpg", ROOT / "docs" / "examples" / "coffee.jpg"]


def photos(folder: Path, count: int, seed: int = 2026) -> list[Path]:
    """`count` JPEGs made from the example photos: random crops of 50-100% of the side, resized to a
    longer side of 320-640 px, flipped or not, quality 75-95 (the decode cost of ordinary photos)."""
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == count:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    for old in existing:
        old.unlink()
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in SOURCES]
    paths = []
    for i, source in zip(range(count), cycle(sources), strict=False):
        w, h = source.size
        side = rng.uniform(0.5, 1.0)
        cw, ch = int(w * side), int(h * side)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = source.crop((x, y, x + cw, y + ch))
        longer = int(rng.integers(320, 641))
        scale = longer / max(cw, ch)
        image = image.resize((max(1, int(cw * scale)), max(1, int(ch * scale))), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
        path = folder / f"photo-{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


async def _load(url: str, bodies: list[bytes], concurrency: int, params: dict[str, str]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    errors = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        todo = iter(bodies)

        async def worker() -> None:
            nonlocal errors
            for body in todo:
                r = await client.post(
                    "/classify", params=params, content=body, headers={"Content-Type": "image/jpeg"}
                )
                errors += r.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "images": len(bodies),
        "seconds": seconds,
        "images_per_s": len(bodies) / seconds,
        "errors": errors,
    }


def load_loop(url: str, paths: list[Path], concurrency: int, params: dict[str, str]) -> dict[str, Any]:
    bodies = [p.read_bytes() for p in paths]
    cpu = time.process_time()
    with asyncio.Runner(loop_factory=event_loop()) as runner:
        result = runner.run(_load(url, bodies, concurrency, params))
    return {**result, "client_cpu_s": time.process_time() - cpu}


def cli(url: str, folder: Path, count: int, concurrency: int, model: str | None) -> dict[str, Any]:
    out = WORK / "out.jsonl"
    cmd = [sys.executable, "-m", "convzoo", "classify", str(folder), "-u", url, "-c", str(concurrency)]
    cmd += ["-o", str(out), "--fresh", *(["--model", model] if model else [])]
    started, cpu = time.perf_counter(), _children_cpu_s()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=3600)
    seconds = time.perf_counter() - started
    cpu = _children_cpu_s() - cpu  # the whole process: start-up, imports, reading the files, writing
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ok = sum(r["status"] == "ok" for r in records)
    if done.returncode != 0 or ok != count:
        raise RuntimeError(
            f"convzoo classify: exit {done.returncode}, {ok} of {count} ok\n{done.stderr[-2000:]}"
        )
    own = re.search(r"\(([\d.]+) files/s\)", done.stderr)  # its summary: from the first request on
    return {
        "images": count,
        "seconds": seconds,
        "images_per_s": count / seconds,
        "errors": count - ok,
        "own_images_per_s": float(own.group(1)) if own else None,
        "client_cpu_s": cpu,
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000, help="photos in the folder")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", default=None, help="default: the registry's default (the photo model)")
    # The same pass repeated on a shared 2-vCPU host moved by 10-40% (docs/bench-cli.md): load, CLI,
    # CLI, load at least cancels a steady drift.
    parser.add_argument("--rounds", type=int, default=2, help="2: load, CLI, CLI, load; 1: load then CLI")
    a = parser.parse_args()
    folder = WORK / "photos"
    paths = photos(folder, a.count)
    params = {"top_k": "5", **({"model": a.model} if a.model else {})}
    port = servers.free_port()
    env = servers.clean_env(CONVZOO_HOST=servers.HOST, CONVZOO_PORT=str(port))
    runs: list[dict[str, Any]] = []
    with servers.serve(
        [sys.executable, "-m", "service"], env, "/health/ready", port, WORK / "server.log"
    ) as srv:
        load_loop(srv.url, paths[:200], a.concurrency, params)  # warm-up: connections, caches, calibration
        order = ["load", "cli"] if a.rounds == 1 else ["load", "cli", "cli", "load"]
        for kind in order:
            server_cpu = srv.cpu_s()
            if kind == "load":
                result = load_loop(srv.url, paths, a.concurrency, params)
            else:
                result = cli(srv.url, folder, a.count, a.concurrency, a.model)
            result["server_cpu_s"] = srv.cpu_s() - server_cpu
            runs.append({"kind": kind, **result})
            own = (
                f" (its own count from the first request: {result['own_images_per_s']:.1f})"
                if kind == "cli"
                else ""
            )
            print(
                f"bench-cli: {kind:4} {result['images']} images in {result['seconds']:.1f} s, "
                f"{result['images_per_s']:.1f} images/s{own}; CPU ms per image: client "
                f"{1e3 * result['client_cpu_s'] / result['images']:.2f}, server "
                f"{1e3 * result['server_cpu_s'] / result['images']:.2f}",
                flush=True,
            )
    rate = {
        k: sum(r["images"] for r in runs if r["kind"] == k)
        / sum(r["seconds"] for r in runs if r["kind"] == k)
        for k in ("load", "cli")
    }
    summary = {
        "count": a.count,
        "concurrency": a.concurrency,
        "model": a.model,
        "runs": runs,
        "load_images_per_s": rate["load"],
        "cli_images_per_s": rate["cli"],
        "ratio": rate["cli"] / rate["load"],
    }
    (WORK / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"bench-cli: the CLI at {rate['cli']:.1f} images/s, the load loop at {rate['load']:.1f}: "
        f"ratio {summary['ratio']:.3f} (c{a.concurrency}, {a.count} photos)"
    )


if __name__ == "__main__":
    main()
