"""Many models, one memory budget: a scale benchmark of the model lifecycle (`make bench-models`).

Builds random-weight ImageNet models into a scratch directory (never committed), serves them with a
memory budget smaller than their sum, and drives two workloads from concurrent clients, each picking a
model at random for every request: `uniform` (every model alike) and `skewed` (80% of requests on two
models). Meanwhile a probe sends one request every 100 ms to a small Fashion-MNIST model. Reports req/s,
p50/p99 of the answered requests, 503s with their latency, loads and evictions, peak RSS against the budget
and the probe's latency; results are merged into docs/bench-models.json under `--label` and rendered to
docs/bench-models.md.

    python scripts/bench_models.py --label after --seconds 45
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from convzoo.launch import Launch, LaunchError, Probe, Running, start  # noqa: E402  (run as a script)

DOCS = REPO / "docs"
DEFAULT_MODELS = "mobilenet_v2,efficientnet_b0,googlenet,densenet121,resnet18,resnet34,resnet50"
PROBE_MODEL = "fmnist-lenet5"
PROBE_INTERVAL_S = 0.1


@dataclass
class Outcome:
    status: int
    seconds: float


@dataclass
class Run:
    results: list[tuple[str, Outcome]]
    probe: list[Outcome]
    peak_rss_mb: float


@dataclass
class WorkloadResult:
    workload: str
    seconds: float
    clients: int
    budget_mb: float
    requests: int
    ok: int
    req_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rejected_503: int
    rejected_p50_ms: float | None
    rejected_max_ms: float | None
    other_errors: int
    loads: int
    evictions: int
    loads_per_min: float
    evictions_per_min: float
    baseline_rss_mb: float
    peak_rss_mb: float
    process_baseline_mb: float | None  # the server's own baseline: its RSS at start-up, before any model
    over_target_mb: float | None  # peak RSS - (budget + process baseline); <= 0 meets the target
    probe_requests: int
    probe_p50_ms: float | None
    probe_p99_ms: float | None
    probe_503: int
    per_model: dict[str, int] = field(default_factory=dict)


# ---- the scratch zoo ----------------------------------------------------------------------------------


def build_zoo(scratch: Path, models: list[str]) -> None:
    """The repository's registry and Fashion-MNIST artifacts, plus random-weight ImageNet exports."""
    registry = scratch / "registry.yaml"
    out = scratch / "models"
    if not registry.exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "registry.yaml", registry)
        for onnx in (REPO / "models").glob("*.onnx"):
            shutil.copyfile(onnx, out / onnx.name)
    missing = [m for m in models if not (out / "imagenet" / f"{m}.onnx").exists()]
    if missing:
        print(f"exporting {', '.join(missing)} with random weights into {out}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "export",
                "build",
                "--zoo",
                "imagenet",
                "--random-weights",
                "--models",
                ",".join(missing),
                "--out",
                str(out),
                "--registry",
                str(registry),
            ],
            cwd=REPO,
            check=True,
        )


# ---- the server -------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_server(code: Path, scratch: Path, port: int, budget_mb: float, log: Path) -> Running:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "CONVZOO_REGISTRY_PATH": str(scratch / "registry.yaml"),
        "CONVZOO_MODELS_DIR": str(scratch / "models"),
        "CONVZOO_MEMORY_BUDGET_MB": str(budget_mb),
        "CONVZOO_ALLOW_RANDOM_WEIGHTS": "true",
    }
    probe = Probe(timeout_s=120, every_s=0.2, request_timeout_s=2)
    launch = Launch(env=env, cwd=code, log=log, port=port, probe=probe, stop_timeout_s=30, tail_chars=None)
    try:
        return start(launch)
    except LaunchError as exc:
        raise SystemExit(str(exc)) from exc


def process_baseline_mb(metrics: str) -> float | None:
    """The RSS the server took as its baseline before any model (None: a server without the metric)."""
    found = re.search(r"^convzoo_process_baseline_bytes (\S+)", metrics, re.MULTILINE)
    return round(float(found.group(1)) / 2**20, 1) if found else None


def count_lifecycle(metrics: str, log_text: str) -> tuple[int, int]:
    """Loads and evictions: from the lifecycle metrics where the server has them, else from its log."""
    loads = [
        float(v)
        for v in re.findall(
            r'^convzoo_model_loads_total\{[^}]*outcome="ok"[^}]*\} (\S+)', metrics, re.MULTILINE
        )
    ]
    evictions = [
        float(v) for v in re.findall(r"^convzoo_model_evictions_total\{[^}]*\} (\S+)", metrics, re.MULTILINE)
    ]
    if "convzoo_model_loads_total" in metrics:
        return int(sum(loads)), int(sum(evictions))
    return len(re.findall(r"model \S+ loaded in", log_text)), len(re.findall(r"evicting model", log_text))


# ---- the clients ------------------------------------------------------------------------------------------


def jpeg(size: int = 256) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png28() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def chooser(workload: str, models: list[str], rng: random.Random) -> str:
    if workload == "uniform" or len(models) < 3:
        return rng.choice(models)
    hot, cold = models[:2], models[2:]
    return rng.choice(hot) if rng.random() < 0.8 else rng.choice(cold)


async def client_loop(
    client: httpx.AsyncClient,
    workload: str,
    models: list[str],
    stop: float,
    seed: int,
    out: list[tuple[str, Outcome]],
) -> None:
    rng = random.Random(seed)
    body = jpeg()
    while time.monotonic() < stop:
        model = chooser(workload, models, rng)
        t0 = time.perf_counter()
        try:
            r = await client.post(
                "/classify", params={"model": model}, content=body, headers={"content-type": "image/jpeg"}
            )
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        out.append((model, Outcome(status, time.perf_counter() - t0)))
        if status == 503:
            await asyncio.sleep(0.05)  # a client that backs off a little, as a real one would


async def probe_loop(client: httpx.AsyncClient, stop: float, out: list[Outcome]) -> None:
    body = png28()
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        try:
            r = await client.post(
                "/classify",
                params={"model": PROBE_MODEL},
                content=body,
                headers={"content-type": "image/png"},
            )
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        out.append(Outcome(status, time.perf_counter() - t0))
        await asyncio.sleep(PROBE_INTERVAL_S)


async def rss_loop(pid: int, stop: float, peak: list[float]) -> None:
    while time.monotonic() < stop:
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.1)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1e3, 1) if values else None


async def drive(url: str, pid: int, workload: str, models: list[str], seconds: float, clients: int) -> Run:
    stop = time.monotonic() + seconds
    results: list[tuple[str, Outcome]] = []
    probe: list[Outcome] = []
    peak = [rss_mb(pid)]
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(
            *(client_loop(client, workload, models, stop, i, results) for i in range(clients)),
            probe_loop(client, stop, probe),
            rss_loop(pid, stop, peak),
        )
    return Run(results, probe, peak[0])


def summarise(
    workload: str,
    run: Run,
    seconds: float,
    clients: int,
    budget_mb: float,
    baseline: float,
    loads: int,
    evictions: int,
    process_baseline: float | None,
) -> WorkloadResult:
    results, probe = run.results, run.probe
    # RSS is read in MiB, the budget is set in MB (10^6 bytes): compared in MiB.
    target = None if process_baseline is None else budget_mb * 1e6 / 2**20 + process_baseline
    over = None if target is None else round(run.peak_rss_mb - target, 1)
    ok = [o.seconds for _, o in results if o.status == 200]
    rejected = [o.seconds for _, o in results if o.status == 503]
    per_model: dict[str, int] = {}
    for model, o in results:
        if o.status == 200:
            per_model[model] = per_model.get(model, 0) + 1
    probe_ok = [o.seconds for o in probe if o.status == 200]
    return WorkloadResult(
        workload=workload,
        seconds=seconds,
        clients=clients,
        budget_mb=budget_mb,
        requests=len(results),
        ok=len(ok),
        req_per_s=round(len(ok) / seconds, 2),
        p50_ms=pct(ok, 50),
        p99_ms=pct(ok, 99),
        rejected_503=len(rejected),
        rejected_p50_ms=pct(rejected, 50),
        rejected_max_ms=round(max(rejected) * 1e3, 1) if rejected else None,
        other_errors=sum(1 for _, o in results if o.status not in (200, 503)),
        loads=loads,
        evictions=evictions,
        loads_per_min=round(loads * 60 / seconds, 1),
        evictions_per_min=round(evictions * 60 / seconds, 1),
        baseline_rss_mb=round(baseline, 1),
        peak_rss_mb=round(run.peak_rss_mb, 1),
        process_baseline_mb=process_baseline,
        over_target_mb=over,
        probe_requests=len(probe),
        probe_p50_ms=pct(probe_ok, 50),
        probe_p99_ms=pct(probe_ok, 99),
        probe_503=sum(1 for o in probe if o.status == 503),
        per_model=per_model,
    )


def run_workload(args: argparse.Namespace, workload: str, models: list[str], port: int) -> WorkloadResult:
    log = args.scratch / f"server-{args.label}-{workload}.log"
    with start_server(args.code, args.scratch, port, args.budget_mb, log) as server:
        url, pid = server.url, server.pid
        time.sleep(args.settle_s)  # start-up work (background calibration where the server has it)
        baseline = rss_mb(pid)
        metrics0 = httpx.get(url + "/metrics").text
        loads0, evictions0 = count_lifecycle(metrics0, log.read_text(errors="replace"))
        run = asyncio.run(drive(url, pid, workload, models, args.seconds, args.clients))
        metrics1 = httpx.get(url + "/metrics").text
        loads1, evictions1 = count_lifecycle(metrics1, log.read_text(errors="replace"))
    return summarise(
        workload,
        run,
        args.seconds,
        args.clients,
        args.budget_mb,
        baseline,
        loads1 - loads0,
        evictions1 - evictions0,
        process_baseline_mb(metrics0),
    )


# ---- the report -------------------------------------------------------------------------------------------

COLUMNS = [
    ("label", "code"),
    ("workload", "workload"),
    ("req_per_s", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("rejected_503", "503s"),
    ("rejected_p50_ms", "503 p50 ms"),
    ("rejected_max_ms", "503 max ms"),
    ("loads_per_min", "loads/min"),
    ("evictions_per_min", "evictions/min"),
    ("baseline_rss_mb", "RSS start MB"),
    ("peak_rss_mb", "peak RSS MB"),
    ("budget_mb", "budget MB"),
    ("process_baseline_mb", "baseline MB"),
    ("over_target_mb", "peak - (budget + baseline) MB"),
    ("probe_p50_ms", "small model p50 ms"),
    ("probe_p99_ms", "small model p99 ms"),
    ("probe_503", "small model 503s"),
]


def render(doc: dict[str, Any]) -> str:
    runs: dict[str, dict[str, Any]] = doc["runs"]
    lines = [
        "# Many models, one memory budget: `make bench-models`",
        "",
        "Generated by `scripts/bench_models.py`; the setup of each run is listed below the table. Random-weight",
        "ImageNet models, a memory budget smaller than their sum, concurrent clients each choosing a model at",
        "random for every request (`uniform`; `skewed`: 80% of requests on two models), and a probe sending",
        f"one request every {PROBE_INTERVAL_S * 1000:.0f} ms to the small `{PROBE_MODEL}` meanwhile.",
        "Latencies are client-side, per request; 503s are counted apart with their own latency.",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for label, run in runs.items():
        for result in run["results"]:
            row = {"label": label, **result}
            lines.append(
                "| " + " | ".join("–" if row.get(k) is None else str(row.get(k)) for k, _ in COLUMNS) + " |"  # noqa: RUF001 -- an en dash marks an empty cell
            )
    lines.append("")
    for label, run in runs.items():
        setup = run["setup"]
        lines.append(f"- **{label}**: " + ", ".join(f"{k} {v}" for k, v in setup.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", required=True, help="name of this run in the report, e.g. before/after")
    p.add_argument(
        "--code", type=Path, default=REPO, help="the convzoo checkout to serve (default: this one)"
    )
    p.add_argument("--scratch", type=Path, default=REPO / "build" / "bench-models")
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--budget-mb", type=float, default=300.0)
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--workloads", default="uniform,skewed")
    p.add_argument("--port", type=int, default=8793)
    p.add_argument("--out", type=Path, default=DOCS / "bench-models.json")
    args = p.parse_args()
    args.scratch = args.scratch.resolve()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    build_zoo(args.scratch, models)
    results = [run_workload(args, w, models, args.port) for w in args.workloads.split(",")]
    for r in results:
        print(json.dumps(asdict(r)), flush=True)
    commit = subprocess.run(  # a plain copy of a checkout (no .git of its own) has no commit to name
        ["git", "rev-parse", "--short", "HEAD"] if (args.code / ".git").exists() else ["true"],
        cwd=args.code,
        capture_output=True,
        text=True,
        check=False,
    )
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    doc["runs"][args.label] = {
        "setup": {
            "commit": commit.stdout.strip() or "unknown",
            "models": ",".join(models),
            "budget_mb": args.budget_mb,
            "seconds": args.seconds,
            "clients": args.clients,
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "results": [asdict(r) for r in results],
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(doc))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
