"""Happy-path throughput of two checkouts, alternated (ABAB...) so that a shared machine's drifting load
hits both alike: wrk with 8 connections POSTs a 28x28 PNG to /classify of one small model.

    python scripts/ab_throughput.py --a OTHER_CHECKOUT --b . --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.hostile import _free_port
from tests.security.hostile import grey_png


def _start(repo: Path, model: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CONVZOO_PORT": str(port),
        "CONVZOO_REGISTRY_PATH": str(REPO / "registry.yaml"),
        "CONVZOO_MODELS_DIR": str(REPO / "models"),
        "CONVZOO_PRELOAD": model,
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_LOG_LEVEL": "warning",
        "PYTHONPATH": str(repo),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v2/models/{model}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{repo}: the server did not start")


def _wrk(url: str, body: Path, seconds: float) -> dict[str, object]:
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": "image/png"}
    command = ["wrk", "-t1", "-c8", f"-d{round(seconds)}s", "-s", str(REPO / "bench" / "wrk_post.lua"), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(out.split("BENCH_JSON ", 1)[1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="a checkout (e.g. before a change)")
    parser.add_argument("--b", type=Path, default=REPO, help="another checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--model", default="fmnist-lenet5")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "28.png"
        body.write_bytes(grey_png(28, 28))
        for round_ in range(args.rounds):
            for label, repo in (("a", args.a), ("b", args.b)):
                proc, url = _start(repo.resolve(), args.model)
                try:
                    target = f"{url}/classify?model={args.model}"
                    _wrk(target, body, 2)  # warm-up
                    r = _wrk(target, body, args.seconds)
                finally:
                    proc.terminate()
                    proc.wait(10)
                rate = float(r["requests"]) / (float(r["duration_us"]) / 1e6)  # type: ignore[arg-type]
                rates[label].append(rate)
                print(f"round {round_} {label}: {rate:.0f} req/s, p50 {r['p50_us']} us, p99 {r['p99_us']} us")
    for label in ("a", "b"):
        print(f"{label}: median {statistics.median(rates[label]):.0f} req/s over {rates[label]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
