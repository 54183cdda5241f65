"""Happy-path throughput of two checkouts, alternated (ABAB...) so that a shared machine's drifting load
hits both alike: wrk with 8 connections POSTs a 28x28 PNG to /classify of one small model, or with
`--photo` a 224x224 JPEG photo to the photo model. Also the CPU time per request, of the process that
holds the models and of all the service's processes together.

    python scripts/ab_throughput.py --a OTHER_CHECKOUT --b . --rounds 4
    python scripts/ab_throughput.py --a OTHER_CHECKOUT --photo --model efficientnet_lite0
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
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.hostile import _free_port  # noqa: E402  (run as a script: the repository on the path first)
from tests.security.conftest import children  # noqa: E402
from tests.security.hostile import grey_png  # noqa: E402


def _start(repo: Path, model: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CONVZOO_PORT": str(port),
        "CONVZOO_REGISTRY_PATH": str(repo / "registry.yaml"),  # each checkout its own schema
        "CONVZOO_MODELS_DIR": str(repo / "models"),
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


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of one process (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _tree(pid: int) -> list[int]:
    """The process and its descendants (fronts, and their decoding workers)."""
    return [pid, *(d for child in children(pid) for d in _tree(child))]


def _cpu(pid: int) -> tuple[float, dict[int, float]]:
    return _cpu_s(pid), {p: _cpu_s(p) for p in _tree(pid)}


def _wrk(url: str, body: Path, seconds: float, content_type: str = "image/png") -> dict[str, object]:
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type}
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
    parser.add_argument("--photo", action="store_true", help="a 224x224 JPEG photo instead of a 28x28 PNG")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"a": [], "b": []}
    cpu_ms: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}  # model process, all processes
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        if args.photo:
            with Image.open(REPO / "docs" / "examples" / "cat.jpg") as cat:
                cat.convert("RGB").resize((224, 224)).save(body, "JPEG", quality=90)
            kind = "image/jpeg"
        else:
            body.write_bytes(grey_png(28, 28))
            kind = "image/png"
        for round_ in range(args.rounds):
            for label, repo in (("a", args.a), ("b", args.b)):
                proc, url = _start(repo.resolve(), args.model)
                try:
                    target = f"{url}/classify?model={args.model}"
                    _wrk(target, body, 2, kind)  # warm-up
                    own_before, all_before = _cpu(proc.pid)
                    r = _wrk(target, body, args.seconds, kind)
                    own_after, all_after = _cpu(proc.pid)
                finally:
                    proc.terminate()
                    proc.wait(10)
                count = max(int(r["requests"]), 1)  # type: ignore[call-overload]
                spent = sum(all_after.values()) - sum(all_before.get(p, 0.0) for p in all_after)
                cpu_ms[label].append(((own_after - own_before) * 1e3 / count, spent * 1e3 / count))
                rate = float(r["requests"]) / (float(r["duration_us"]) / 1e6)  # type: ignore[arg-type]
                rates[label].append(rate)
                print(
                    f"round {round_} {label}: {rate:.1f} req/s, p50 {r['p50_us']} us, p99 {r['p99_us']} us; "
                    f"CPU ms/request: model process {cpu_ms[label][-1][0]:.2f}, all {cpu_ms[label][-1][1]:.2f}"
                )
    for label in ("a", "b"):
        own = statistics.median(c[0] for c in cpu_ms[label])
        every = statistics.median(c[1] for c in cpu_ms[label])
        print(
            f"{label}: median {statistics.median(rates[label]):.1f} req/s over {[round(x, 1) for x in rates[label]]}; "
            f"CPU ms/request: model process {own:.2f}, all processes {every:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
