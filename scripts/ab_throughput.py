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
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from convzoo.launch import Launch, LaunchError, Probe, Running, cpu_seconds, start  # noqa: E402  (run as a script: the repository on the path first)
from tests.security.hostile import grey_png  # noqa: E402


def _start(repo: Path, model: str, log: Path) -> Running:
    env = {
        **os.environ,
        "CONVZOO_REGISTRY_PATH": str(repo / "registry.yaml"),  # each checkout its own schema
        "CONVZOO_MODELS_DIR": str(repo / "models"),
        "CONVZOO_PRELOAD": model,
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_LOG_LEVEL": "warning",
        "PYTHONPATH": str(repo),
    }
    probe = Probe(f"/v2/models/{model}/ready", timeout_s=60, every_s=0.1)
    try:
        return start(Launch(env=env, cwd=repo, log=log, probe=probe))
    except LaunchError as exc:
        raise SystemExit(f"{repo}: {exc}") from exc


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
                with _start(repo.resolve(), args.model, Path(tmp) / f"{label}.log") as server:
                    target = f"{server.url}/classify?model={args.model}"
                    _wrk(target, body, 2, kind)  # warm-up
                    own_before, all_before = cpu_seconds(server.pid), server.cpu_s()
                    r = _wrk(target, body, args.seconds, kind)
                    own_after, all_after = cpu_seconds(server.pid), server.cpu_s()
                count = max(int(r["requests"]), 1)  # type: ignore[call-overload]
                spent = all_after - all_before
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
