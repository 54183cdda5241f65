"""A Python load generator (httpx, asyncio) for hosts without wrk; run in its own process.

`python -m bench.pyload URL --concurrency C --seconds S [--body FILE --content-type T]` prints the same
BENCH_JSON line as bench/wrk_post.lua. On a 2-core host it competes with the server for the CPU, so it
reads lower than wrk where the server is fast (the bench measures and reports the difference).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np


async def _run(
    url: str, concurrency: int, seconds: float, body: bytes | None, content_type: str, extra: dict[str, str]
) -> dict[str, object]:
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": content_type, **extra} if body is not None else {}
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    if body is None:
                        r = await client.get(url)
                    else:
                        r = await client.post(url, content=body, headers=headers)
                    await r.aread()
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.HTTPError:
                    errors["connect"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code >= 400:
                    errors["status"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        duration = time.perf_counter() - start
    arr = np.asarray(latencies or [0.0]) * 1e6
    return {
        "requests": len(latencies),
        "duration_us": int(duration * 1e6),
        "errors": errors,
        "p50_us": int(np.percentile(arr, 50)),
        "p90_us": int(np.percentile(arr, 90)),
        "p99_us": int(np.percentile(arr, 99)),
        "mean_us": float(arr.mean()),
        "max_us": int(arr.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--body", type=Path)
    parser.add_argument("--content-type", default="application/octet-stream")
    parser.add_argument("--header", action="append", default=[], help="an extra 'Name: value' header")
    a = parser.parse_args()
    body = a.body.read_bytes() if a.body else None
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        extra = {h.split(":", 1)[0].strip(): h.split(":", 1)[1].strip() for h in a.header}
        result = runner.run(_run(a.url, a.concurrency, a.seconds, body, a.content_type, extra))
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
