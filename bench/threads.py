"""`python -m bench.threads`: one CPU's worth of limit, the intra-op threads of before (ONNX Runtime's own
default, the host's cores) against those chosen now (from the CPUs the process may use), side by side.

Two limits: `taskset -c 0`, and a cgroup limited to one CPU (made here, which needs root; skipped where it
cannot be made). Under each:
- in one process, each model in two sessions, before's thread count and now's, run at batch 1 in
  alternating slices (`--slices` of 0.25 s each), so that the rest of the machine's load falls on both
  alike: runs/s, p50, p99, CPU per run;
- the service, `python -m service` from the code at `--old` and from this tree (`--rounds` times, the
  order alternating), with the committed registry, fmnist-lenet5 and the photo model (efficientnet_lite0)
  preloaded and background calibration off (it would run during the load), defaults otherwise; the load
  from `bench.pyload` pinned to another CPU: the 28x28 PNG at c8, the 500x375 JPEG photo at c2. Per run:
  the service's processes and threads (after the load), images/s, p99, server CPU per image.
`--pools` adds the service unlimited with a pool per model and with the shared pool, and the CPU time
per run of the photo model at a lone client's pace in each (whether the pool's idle threads spin). Prints markdown
tables and `RESULT {...}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import images, servers
from service.compute import cpus, runtime, threads
from service.core.registry import load_registry
from service.core.settings import IntraOpPool, Settings

ROOT = servers.ROOT
LOGS = ROOT / ".cache" / "bench" / "threads"
PHOTO = "efficientnet_lite0"
SMALL = "fmnist-lenet5"
POINTS = ((SMALL, 8, "fashion.png", "image/png"), (PHOTO, 2, "photo.jpg", "image/jpeg"))


def old_tree(rev: str, into: Path) -> Path:
    """The service's code at `rev`, unpacked; run from there (`python -m` imports from the working
    directory), the models and the registry from this tree."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "service"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    tar = into / "old.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into / "old", filter="data")
    return into / "old"


@contextlib.contextmanager
def one_cpu_cgroup() -> Iterator[Path | None]:
    """A cgroup limited to one CPU (v2, else v1), removed afterwards; None where it cannot be made."""
    root, name = cpus.CGROUP_ROOT, f"convzoo-bench-{uuid.uuid4().hex[:8]}"
    v2 = (root / "cgroup.controllers").is_file()
    directory = root / name if v2 else root / "cpu" / name
    try:
        directory.mkdir()
        if v2:
            (directory / "cpu.max").write_text("100000 100000")
        else:
            (directory / "cpu.cfs_period_us").write_text("100000")
            (directory / "cpu.cfs_quota_us").write_text("100000")
    except OSError as exc:
        print(f"no one-CPU cgroup here ({exc.strerror}); that limit is skipped", flush=True)
        with contextlib.suppress(OSError):
            directory.rmdir()
        yield None
        return
    try:
        yield directory
    finally:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # its processes may take a moment to be gone
            try:
                directory.rmdir()
                break
            except OSError:
                time.sleep(0.5)


def group_threads(pgid: int) -> tuple[int, int, int]:
    """(processes, threads of the service process, threads of all) of the server's process group."""
    processes = service = total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            count = len(os.listdir(stat.parent / "task"))
        except OSError:
            continue
        if int(fields[2]) == pgid:
            processes += 1
            total += count
            service = count if int(stat.parent.name) == pgid else service
    return processes, service, total


def load(
    url: str, cpu: int, concurrency: int, seconds: float, body: Path, content_type: str
) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "bench.pyload", url]
    cmd += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    cmd += ["--body", str(body), "--content-type", content_type]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    ok = raw["requests"] - raw["errors"]["status"]
    return {
        "images_per_s": ok / (raw["duration_us"] / 1e6),
        "p99_ms": raw["p99_us"] / 1e3,
        "requests": ok,
        "failed": sum(raw["errors"].values()),
    }


@dataclass(frozen=True)
class Run:
    limit: str  # in words
    prefix: tuple[str, ...]  # what starts the service under it
    code: str  # in words
    tree: Path  # where its `service` package is
    settings: tuple[tuple[str, str], ...] = ()  # CONVZOO_* beside the bench's own


def run_one(run: Run, bodies: Path, seconds: float, load_cpu: int) -> dict[str, Any]:
    port = servers.free_port()
    env = servers.clean_env(
        CONVZOO_REGISTRY_PATH=str(ROOT / "registry.yaml"),
        CONVZOO_MODELS_DIR=str(ROOT / "models"),
        CONVZOO_PRELOAD=f"{SMALL},{PHOTO}",
        CONVZOO_BACKGROUND_CALIBRATION="false",
        CONVZOO_HOST=servers.HOST,
        CONVZOO_PORT=str(port),
        **dict(run.settings),
    )
    cmd = [*run.prefix, sys.executable, "-m", "service"]
    row: dict[str, Any] = {"limit": run.limit, "code": run.code}
    log = LOGS / f"{uuid.uuid4().hex[:8]}.log"
    with servers.serve(cmd, env, "/health/ready", port, log, cwd=run.tree) as srv:  # its `service`
        host = json.loads(_get(f"{srv.url}/models")).get("host")
        row["intra_op_threads"] = host["intra_op_threads"] if host else None
        row["thread_pool"] = host["thread_pool"] if host else None
        for model, concurrency, body, content_type in POINTS:
            url = f"{srv.url}/classify?model={model}"
            load(url, load_cpu, concurrency, 1.0, bodies / body, content_type)  # warm-up
            cpu_s = srv.cpu_s()
            point = load(url, load_cpu, concurrency, seconds, bodies / body, content_type)
            point["cpu_ms"] = (srv.cpu_s() - cpu_s) * 1e3 / max(1, point["requests"])
            row[model] = point
        row["processes"], row["service_threads"], row["threads"] = group_threads(srv.pid)
    log.unlink()
    return row


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def interleaved(rounds: int, slice_s: float) -> dict[str, Any]:
    """In this process (started under the limit): each model in two sessions, with the threads of ONNX
    Runtime's own default (the host's physical cores) and with the threads chosen now, run at batch 1 in
    alternating slices, so that the load of the rest of the machine falls on both alike."""
    registry = load_registry(ROOT / "registry.yaml")
    old = cpus.physical_cores(frozenset(range(os.cpu_count() or 1)))
    new = threads.for_settings(Settings()).intra_op_threads
    out: dict[str, Any] = {"threads": {"before": old, "now": new}}
    for name in (SMALL, PHOTO):
        entry = registry.get(name)
        sessions = {
            code: runtime.load_model(
                ROOT / "models" / entry.artifact.path, entry, Settings(intra_op_threads=n), max_batch_size=1
            )
            for code, n in (("before", old), ("now", new))
        }
        one = np.zeros((1, *sessions["now"].sample_shape), dtype=np.float32)
        times: dict[str, list[float]] = {code: [] for code in sessions}
        busy = dict.fromkeys(sessions, 0.0)
        cpu = dict.fromkeys(sessions, 0.0)
        for _ in range(rounds):
            for code, model in sessions.items():
                start, cpu0 = time.perf_counter(), time.process_time()
                while time.perf_counter() - start < slice_s:
                    t0 = time.perf_counter()
                    model.run(one)
                    times[code].append(time.perf_counter() - t0)
                busy[code] += time.perf_counter() - start
                cpu[code] += time.process_time() - cpu0
        out[name] = {
            code: {
                "runs_per_s": len(t) / busy[code],
                "p50_ms": float(np.percentile(t, 50) * 1e3),
                "p99_ms": float(np.percentile(t, 99) * 1e3),
                "cpu_ms": cpu[code] * 1e3 / len(t),
            }
            for code, t in times.items()
        }
    return out


def spin_cost(pool: IntraOpPool, runs: int = 40, gap_s: float = 0.005) -> dict[str, float]:
    """In this process: the photo model with 2 intra-op threads in `pool`, `runs` batch-1 runs `gap_s`
    apart (a lone client's pace); the process's CPU time per run shows whether idle threads spin."""
    entry = load_registry(ROOT / "registry.yaml").get(PHOTO)
    settings = Settings(intra_op_threads=2, intra_op_pool=pool)
    model = runtime.load_model(ROOT / "models" / entry.artifact.path, entry, settings, max_batch_size=1)
    one = np.zeros((1, *model.sample_shape), dtype=np.float32)
    model.run(one)
    cpu0, busy = time.process_time(), 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run(one)
        busy += time.perf_counter() - t0
        time.sleep(gap_s)
    return {"run_ms": busy * 1e3 / runs, "cpu_ms_per_run": (time.process_time() - cpu0) * 1e3 / runs}


def interleaved_under(prefix: tuple[str, ...], rounds: int, slice_s: float) -> dict[str, Any]:
    cmd = [*prefix, sys.executable, "-m", "bench.threads", "--interleaved", str(rounds), str(slice_s)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def raw_markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| limit | model | intra-op threads, before -> now | runs/s | p50 ms | p99 ms | CPU ms/run |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for limit, result in results.items():
        t = result["threads"]
        for model in (SMALL, PHOTO):
            b, n = result[model]["before"], result[model]["now"]
            cells = [
                f"{b[k]:{f}} -> {n[k]:{f}}"
                for k, f in (("runs_per_s", ",.0f"), ("p50_ms", ".3g"), ("p99_ms", ".3g"), ("cpu_ms", ".3g"))
            ]
            lines.append(f"| {limit} | {model} | {t['before']} -> {t['now']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| limit | code | round | processes | threads: service; all | intra-op threads, pool | "
        f"{SMALL} c8: images/s; p99 ms; CPU ms/image | {PHOTO} c2: images/s; p99 ms; CPU ms/image |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        small, photo = r[SMALL], r[PHOTO]
        threads = f"{r['intra_op_threads']}, {r['thread_pool']}" if r["intra_op_threads"] else "host cores"
        lines.append(
            f"| {r['limit']} | {r['code']} | {r['round']} | {r['processes']} | "
            f"{r['service_threads']}; {r['threads']} | {threads} | "
            f"{small['images_per_s']:,.0f}; {small['p99_ms']:.1f}; {small['cpu_ms']:.2f} | "
            f"{photo['images_per_s']:,.1f}; {photo['p99_ms']:.0f}; {photo['cpu_ms']:.1f} |"
        )
    return "\n".join(lines)


def plan(old: Path, cgroup: Path | None, server_cpu: int, pools: bool) -> list[Run]:
    """Per limit, the old code and the new; with `pools`, also the new code unlimited, with a pool per
    model and with the shared pool."""
    limits: list[tuple[str, tuple[str, ...]]] = [
        (f"taskset -c {server_cpu}", ("taskset", "-c", str(server_cpu)))
    ]
    if cgroup is not None:
        join = f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"'
        limits.append(("cgroup, 1 CPU", ("sh", "-c", join, "sh")))
    runs = [
        Run(limit, prefix, code, tree)
        for limit, prefix in limits
        for code, tree in (("before", old), ("now", ROOT))
    ]
    if pools:
        for pool in ("per_model", "shared"):
            runs.append(Run("none", (), f"now, {pool}", ROOT, (("CONVZOO_INTRA_OP_POOL", pool),)))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", default="985e1f2", help="the commit whose defaults are compared")
    parser.add_argument("--seconds", type=float, default=3.0, help="per load point")
    parser.add_argument("--rounds", type=int, default=1, help="each round runs every layout, in turn")
    parser.add_argument("--pools", action="store_true", help="also: unlimited, per-model pools vs shared")
    parser.add_argument("--slices", type=int, default=12, help="alternating slices of each session")
    parser.add_argument("--spin", choices=["per_model", "shared"], help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", nargs=2, metavar=("ROUNDS", "SLICE_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.interleaved:  # the child started under a limit
        print(json.dumps(interleaved(int(args.interleaved[0]), float(args.interleaved[1]))))
        return
    if args.spin:  # the child measuring one pool
        print(json.dumps(spin_cost(args.spin)))
        return
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs: the service on one, the load on another")
    LOGS.mkdir(parents=True, exist_ok=True)
    bodies = LOGS / "bodies"
    bodies.mkdir(exist_ok=True)
    (bodies / "photo.jpg").write_bytes(images.photo_jpeg())
    (bodies / "fashion.png").write_bytes(images.fashion_png())
    server_cpu, load_cpu = min(os.sched_getaffinity(0)), max(os.sched_getaffinity(0))
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, one_cpu_cgroup() as cgroup:
        runs = plan(old_tree(args.old, Path(tmp)), cgroup, server_cpu, args.pools)
        raw: dict[str, dict[str, Any]] = {}
        for limit, prefix in {r.limit: r.prefix for r in runs if r.prefix}.items():
            print(f"in-process, interleaved: {limit}", flush=True)
            raw[limit] = interleaved_under(prefix, args.slices, 0.25)
        spin = {}
        for pool in ("per_model", "shared") if args.pools else ():
            cmd = [sys.executable, "-m", "bench.threads", "--spin", pool]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
            spin[pool] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{PHOTO}, 2 threads, {pool} pool, runs 5 ms apart: {spin[pool]}", flush=True)
        for round_ in range(args.rounds):
            # alternate the order, so neither code always runs first in a pair
            for run in runs if round_ % 2 == 0 else runs[::-1]:
                print(f"round {round_}: {run.limit}, {run.code}", flush=True)
                rows.append({"round": round_, **run_one(run, bodies, args.seconds, load_cpu)})
    rows.sort(key=lambda r: (r["limit"], r["code"], r["round"]))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(raw_markdown(raw))
    print()
    print(markdown(rows))
    print("RESULT " + json.dumps({"interleaved": raw, "spin": spin, "service": rows}))


if __name__ == "__main__":
    main()
