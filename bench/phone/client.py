"""A fixed number of photos sent to a server at a fixed concurrency; run in its own process.

`python -m bench.phone.client URL --concurrency C --requests N --bodies BODIES.json` prints one JSON
object: images/s, p50/p99 and failures. BODIES.json lists the request bodies ({"path", "content_type",
"headers"}), sent in turn. A fixed count, not a fixed time, because a 12 MP photo takes up to a second
of server CPU: every photo sent is answered before the bench reads the server's CPU again, so no request
left in flight at the end of a window (or after a warm-up) is counted in the CPU of the next one. At a
few photos a second, this client's own CPU is a few ms per request against the hundreds the server
spends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load import Body


def write_bodies(bodies: list[Body], path: Path) -> Path:
    items = [
        {"path": str(b.path), "content_type": b.content_type, "headers": list(b.headers)} for b in bodies
    ]
    path.write_text(json.dumps(items))
    return path


async def _run(
    url: str, concurrency: int, requests: int, bodies: list[tuple[bytes, dict[str, str]]]
) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    taken = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:

        async def worker() -> None:
            nonlocal failed
            for i in taken:  # shared: each request is taken by one worker
                content, headers = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=content, headers=headers)
                    await r.aread()
                    ok = r.status_code < 400
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                failed += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": requests,
        "failed": failed,
        "seconds": round(elapsed, 3),
        "images_per_s": (requests - failed) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    a = parser.parse_args()
    bodies = [
        (Path(b["path"]).read_bytes(), {"Content-Type": b["content_type"], **dict(b["headers"])})
        for b in json.loads(a.bodies.read_text())
    ]
    print(json.dumps(asyncio.run(_run(a.url, a.concurrency, a.requests, bodies))))


if __name__ == "__main__":
    main()
