"""`python -m bench.auth`: what API keys and quotas cost, and whether a flooding key hurts a compliant one.

Two points on fmnist-lenet5, each interleaved over `--rounds` rounds (docs/auth.md has the figures):

- cost: c32 with keys and quotas off, then on (a key with a model list and a rate it never reaches): the
  server's CPU per request (every process of the service counted) and the ratio, in one run;
- fairness: a compliant key at c4 alone, then beside a flooding key sending 10x its quota (paced, from a
  thread of this process): the compliant key's p99, and what the flooder got (200 within its rate, 429
  beyond).

Prints one line per measurement and a final `RESULT {...}` JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench import images, load, servers
from service.access.keys import digest, new_secret
from service.core.registry import load_registry, save_registry

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "bench-auth"
MODEL = "fmnist-lenet5"
FLOOD_QUOTA = 20.0  # requests per second of the flooding key
FLOOD_FACTOR = 10  # it sends this many times its quota


def _zoo() -> tuple[Path, Path]:
    """A registry of fmnist-lenet5 alone (the default) and its model directory, under .cache/bench-auth."""
    models = WORK / "models"
    models.mkdir(parents=True, exist_ok=True)
    source = load_registry(ROOT / "registry.yaml")
    entry = source.get(MODEL)
    shutil.copyfile(ROOT / "models" / entry.artifact.path, models / entry.artifact.path)
    registry = WORK / "registry.yaml"
    save_registry(source.model_copy(update={"models": [entry], "default": MODEL}), registry)
    return registry, models


def _keys() -> tuple[Path, dict[str, str]]:
    secrets = {"compliant": new_secret(), "flooder": new_secret()}
    entries = [
        {
            "id": "compliant",
            "sha256": digest(secrets["compliant"]),
            "scopes": ["infer"],
            "models": [MODEL],
            # a quota it never reaches: the buckets are checked on every request
            "rate": {"requests_per_s": 1e6, "images_per_s": 1e6},
        },
        {
            "id": "flooder",
            "sha256": digest(secrets["flooder"]),
            "scopes": ["infer"],
            "rate": {"requests_per_s": FLOOD_QUOTA, "burst_s": 1.0},
        },
    ]
    path = WORK / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path, secrets


def _measure(
    srv: servers.Running, body: load.Body, concurrency: int, seconds: float, tool: str
) -> dict[str, Any]:
    url = f"{srv.url}/classify?model={MODEL}&top_k=5"
    load.run(url, concurrency=concurrency, seconds=1.0, body=body, tool=tool, warmup_s=0)  # warm-up
    cpu0 = srv.cpu_s()
    point = load.run(url, concurrency=concurrency, seconds=seconds, body=body, tool=tool, warmup_s=0)
    point["cpu_ms_per_request"] = (srv.cpu_s() - cpu0) * 1e3 / max(1, point["requests"])
    return point


def _request(port: int, png: bytes, secret: str) -> bytes:
    head = (
        f"POST /classify?model={MODEL}&top_k=5 HTTP/1.1\r\nHost: {servers.HOST}:{port}\r\n"
        f"Content-Type: image/png\r\nAuthorization: Bearer {secret}\r\nContent-Length: {len(png)}\r\n\r\n"
    )
    return head.encode() + png


def _answer(conn: socket.socket, pending: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (the service's): its status, and what follows it."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"
    )
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return int(lines[0].split()[1]), rest[length:]


def _flood(port: int, png: bytes, secret: str, stop: threading.Event, statuses: Counter[int]) -> None:
    """FLOOD_FACTOR x its quota, paced (open loop), over a plain socket with the request made once: the
    load generator's own CPU stays small beside the server's (an HTTP client library cost several times
    more per request on the same cores)."""
    interval = 1.0 / (FLOOD_QUOTA * FLOOD_FACTOR)
    request = _request(port, png, secret)
    conn: socket.socket | None = None
    pending = b""
    due = time.perf_counter()
    while not stop.is_set():
        if conn is None:
            conn, pending = socket.create_connection((servers.HOST, port)), b""
        try:
            conn.sendall(request)
            status, pending = _answer(conn, pending)
            statuses[status] += 1
        except (ConnectionError, OSError):
            conn.close()
            conn = None
            statuses[0] += 1  # a connection the server closed
        due += interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    if conn is not None:
        conn.close()


def _in_process(keys_path: Path, secret: str, n: int = 20_000) -> float:
    """Microseconds the Guard adds to one request (admission, quota, fair share, the caller for the
    models), on this process's event loop: the same request through a do-nothing app, with and without it."""
    from service.access import auth
    from service.core.errors import problem_details, reply_of
    from service.core.settings import Settings

    async def app(scope: Any, receive: Any, send: Any) -> None:
        auth._charge(MODEL, 1)  # what GuardedModels.infer adds

    settings = Settings(api_keys_file=keys_path)
    guard = auth.Guard(
        app, access=auth.Access(settings), render=lambda scope, exc: problem_details(reply_of(exc))
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/classify",
        "query_string": f"model={MODEL}&top_k=5".encode(),
        "headers": [(b"content-type", b"image/png"), (b"authorization", f"Bearer {secret}".encode())],
        "client": ("127.0.0.1", 5000),
    }

    async def run(target: Any) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await target(dict(scope), None, None)
        return (time.perf_counter() - started) / n

    async def both() -> float:
        await run(guard)  # warm
        guarded = [await run(guard) for _ in range(3)]
        bare = [await run(app) for _ in range(3)]
        return min(guarded) - min(bare)

    return asyncio.run(both()) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--points", default="cost,fairness", help="which: cost, fairness, or both")
    args = parser.parse_args()
    registry, models = _zoo()
    keys_path, secrets = _keys()
    png = images.fashion_png()
    png_path = WORK / "fashion.png"
    png_path.write_bytes(png)
    tool = load.available_tool()
    common = {
        "CONVZOO_REGISTRY_PATH": str(registry),
        "CONVZOO_MODELS_DIR": str(models),
        "CONVZOO_HOST": servers.HOST,
        "CONVZOO_LOG_LEVEL": "warning",  # the request log's lines are not what is measured
    }
    plain = load.Body(png_path, "image/png")
    keyed = load.Body(png_path, "image/png", (("Authorization", f"Bearer {secrets['compliant']}"),))
    rows: list[dict[str, Any]] = []
    guard_us = _in_process(keys_path, secrets["compliant"])
    rows.append({"point": "guard in process", "us_per_request": guard_us})
    print(f"the Guard in process: {guard_us:.1f} us per request", flush=True)

    def serve(keys: bool) -> Any:
        port = servers.free_port()
        env = servers.clean_env(**common, CONVZOO_PORT=str(port))
        if keys:
            env["CONVZOO_API_KEYS_FILE"] = str(keys_path)
        log = WORK / f"server-{'keys' if keys else 'open'}.log"
        return servers.serve([sys.executable, "-m", "service"], env, "/health/ready", port, log)

    points = set(args.points.split(","))
    for round_ in range(args.rounds):
        # cost: c32, keys off and on, in either order from one round to the next (against drift)
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for keys in order if "cost" in points else ():
            with serve(keys) as srv:
                point = _measure(srv, keyed if keys else plain, 32, args.seconds, tool)
            label = "keys and quotas on" if keys else "keys off"
            rows.append({"point": "cost", "round": round_, "setting": label, **point})
            print(
                f"cost round {round_}, {label}: {point['images_per_s']:.0f} req/s, p99 {point['p99_ms']:.2f} ms, "
                f"CPU {point['cpu_ms_per_request']:.3f} ms/request",
                flush=True,
            )
        # fairness: the compliant key at c4, alone then beside the flooder
        if "fairness" not in points:
            continue
        with serve(True) as srv:
            for flooding in (False, True):
                stop = threading.Event()
                statuses: Counter[int] = Counter()
                port = int(srv.url.rsplit(":", 1)[1])
                flooder = threading.Thread(
                    target=_flood, args=(port, png, secrets["flooder"], stop, statuses)
                )
                if flooding:
                    flooder.start()
                    time.sleep(1.0)  # past its burst
                started = time.perf_counter()
                point = _measure(srv, keyed, 4, args.seconds, tool)
                if flooding:
                    stop.set()
                    flooder.join()
                flood_s = time.perf_counter() - started + 1.0
                label = "beside the flooder" if flooding else "alone"
                row = {"point": "fairness", "round": round_, "setting": label, **point}
                if flooding:
                    row["flooder"] = {
                        "seconds": round(flood_s, 2),
                        "statuses": dict(statuses),
                        "allowed": round(FLOOD_QUOTA * flood_s + FLOOD_QUOTA, 1),  # rate x time + burst
                    }
                rows.append(row)
                print(
                    f"fairness round {round_}, compliant c4 {label}: p50 {point['p50_ms']:.2f} ms, "
                    f"p99 {point['p99_ms']:.2f} ms, failed {point['failed']}"
                    + (f"; flooder {dict(statuses)} in {flood_s:.1f} s" if flooding else ""),
                    flush=True,
                )
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
