"""`python -m bench` (make bench): one run, side by side, written to docs/bench.{json,md,png}.

(a) raw ONNX Runtime in-process, (b) convzoo over HTTP at concurrency 1, 8 and 32, (c) a naive FastAPI +
PyTorch eager endpoint, (d) a bare FastAPI route, (e) the peers (bench/peers/: TorchServe, PyTriton,
LitServe, BentoML) serving the same ONNX the same way, then convzoo again; then the worker-model sweep (processes x intra-op threads,
batching on/off) for a small and a large model; then 12 MP phone photos through convzoo, raw ONNX Runtime and the peers
(bench/phone/; alone: `--only phone`). Loopback only; every measurement has a fixed duration or a fixed count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import images, load, report, servers, workspace
from bench.load import Body
from bench.peers import PEERS, Peer, by_key
from bench.peers import report as peer_report
from bench.peers import run as peer_run
from bench.phone import report as phone_report
from bench.phone import run as phone_run
from service.compute import cpus
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = workspace.SMALL, workspace.LARGE
LOGS = workspace.WORK / "logs"


@dataclass(frozen=True)
class Layout:
    """How the 2 cores are split: uvicorn worker processes x ONNX Runtime intra-op threads."""

    label: str
    workers: int
    intra_op_threads: int
    inference_threads: int = 1
    spinning: bool = False
    max_queue_delay_us: int | None = None  # None: the default
    batch_when_idle: bool | None = None  # None: the default
    front_processes: int | None = None  # None: the default


LAYOUTS = [
    Layout("1 process x 2 threads, 1 inference thread", 1, 2),
    Layout("1 process x 2 threads, 1 inference thread, ORT spinning on", 1, 2, spinning=True),
    Layout("2 processes x 1 thread", 2, 1),
    Layout("1 process, 2 inference threads x 1 thread", 1, 1, inference_threads=2),
    Layout("1 process, 2 inference threads x 2 threads", 1, 2, inference_threads=2),
    Layout("1 process x 2 threads, 1 inference thread, queue delay 0", 1, 2, max_queue_delay_us=0),
    Layout("1 process x 2 threads, 1 inference thread, batch by delay only", 1, 2, batch_when_idle=False),
]


def defaults() -> dict[str, Any]:
    fields = Settings.model_fields
    names = [
        "workers",
        "front_processes",
        "intra_op_threads",
        "inference_threads",
        "intra_op_spinning",
        "preprocess_threads",
        "max_batch_size",
        "max_queue_delay_us",
        "batch_when_idle",
        "max_queue_size",
        "log_level",
    ]
    found = {n: fields[n].default for n in names if n in fields}
    if found.get("front_processes") is None:  # the default: one per core
        found["front_processes"] = cpus.front_processes()
    return found


class Bench:
    def __init__(self, seconds: float, large_seconds: float, raw_seconds: float, tool: str) -> None:
        self.seconds, self.raw_seconds, self.tool = seconds, raw_seconds, tool
        # resnet50 answers in waves of a batch (up to ~1.5 s at c32 on 2 cores): a longer window keeps
        # the count of completed requests from under-reading by a wave.
        self.seconds_for = {LARGE: large_seconds, SMALL: seconds}
        self.defaults = defaults()
        bodies = workspace.WORK / "bodies"
        bodies.mkdir(parents=True, exist_ok=True)
        (bodies / "photo.jpg").write_bytes(images.photo_jpeg())
        (bodies / "fashion.png").write_bytes(images.fashion_png())
        self.bodies = {
            LARGE: Body(bodies / "photo.jpg", "image/jpeg"),
            SMALL: Body(bodies / "fashion.png", "image/png"),
        }

    def _paths(self, model: str) -> dict[str, str]:
        return {
            "CONVZOO_REGISTRY_PATH": str(workspace.registry_for(model)),
            "CONVZOO_MODELS_DIR": str(workspace.WORK / "models"),
            "CONVZOO_ALLOW_RANDOM_WEIGHTS": "true",
            "CONVZOO_PRELOAD": model,
        }

    def _layout_env(self, layout: Layout | None, batching: bool) -> dict[str, str]:
        env: dict[str, str] = {}
        if layout is not None:
            env.update(
                CONVZOO_WORKERS=str(layout.workers),
                CONVZOO_INTRA_OP_THREADS=str(layout.intra_op_threads),
                CONVZOO_INFERENCE_THREADS=str(layout.inference_threads),
                CONVZOO_INTRA_OP_SPINNING=str(layout.spinning).lower(),
            )
            if layout.max_queue_delay_us is not None:
                env["CONVZOO_MAX_QUEUE_DELAY_US"] = str(layout.max_queue_delay_us)
            if layout.batch_when_idle is not None:
                env["CONVZOO_BATCH_WHEN_IDLE"] = str(layout.batch_when_idle).lower()
            if layout.front_processes is not None:
                env["CONVZOO_FRONT_PROCESSES"] = str(layout.front_processes)
        if not batching:
            env["CONVZOO_MAX_BATCH_SIZE"] = "1"
        return env

    # ---- (a) -------------------------------------------------------------------------------------------

    def raw(self, model: str, layout: Layout | None = None, batches: str = "1,8,32") -> dict[str, Any]:
        workers = layout.workers if layout else int(self.defaults.get("workers", 1))
        env = servers.clean_env(**self._paths(model), **self._layout_env(layout, True))
        cmd = [
            sys.executable,
            "-m",
            "bench.raw",
            "--registry",
            env["CONVZOO_REGISTRY_PATH"],
            "--model",
            model,
            "--seconds",
            str(self.raw_seconds),
            "--processes",
            str(workers),
            "--batches",
            batches,
        ]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=600)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    # ---- (b) -------------------------------------------------------------------------------------------

    def convzoo(
        self, model: str, concurrencies: list[int], layout: Layout | None = None, batching: bool = True
    ) -> list[dict[str, Any]]:
        port = servers.free_port()
        env = servers.clean_env(
            **self._paths(model),
            **self._layout_env(layout, batching),
            CONVZOO_HOST=servers.HOST,
            CONVZOO_PORT=str(port),
        )
        name = f"convzoo-{model}-{layout.workers if layout else 'default'}"
        with servers.serve(
            [sys.executable, "-m", "service"], env, "/health/ready", port, LOGS / f"{name}.log"
        ) as srv:
            url = f"{srv.url}/classify?model={model}&top_k=5"
            return [
                self._load(srv, url, c, self.bodies[model], seconds=self.seconds_for[model])
                for c in concurrencies
            ]

    # ---- (c) and (d) ------------------------------------------------------------------------------------

    def naive(self, concurrencies: list[int]) -> list[dict[str, Any]]:
        port = servers.free_port()
        cmd = servers.uvicorn_app(
            "bench.naive_app:create_app",
            port,
            workers=1,
            log_level=str(self.defaults.get("log_level", "info")),
        )
        with servers.serve(cmd, servers.clean_env(), "/health", port, LOGS / "naive.log") as srv:
            return [
                self._load(srv, f"{srv.url}/classify", c, self.bodies[LARGE], seconds=self.seconds_for[LARGE])
                for c in concurrencies
            ]

    # ---- (e) the peers ------------------------------------------------------------------------------

    def peers(
        self, chosen: list[Peer], plan: list[tuple[str, list[int]]], before: dict[str, list[dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per model: each peer in turn, each followed by convzoo again, so that every peer is compared with
        the mean of the convzoo runs just before and just after it (the first one before is (b))."""
        entries: dict[str, dict[str, Any]] = {
            p.key: {"peer": p.label, "version": None, "results": {}} for p in chosen
        }
        last: dict[str, Any] = {}
        for model, concurrencies in plan:
            previous = [r for r in before[model] if r["concurrency"] in concurrencies]
            for p in chosen:
                print(f"(e) {p.label}, {model}", flush=True)
                seconds = self.seconds_for[model]

                def point(
                    srv: servers.Running, url: str, c: int, body: Body, s: float = seconds
                ) -> dict[str, Any]:
                    return self._load(srv, url, c, body, seconds=s)

                res = peer_run.measure(
                    p,
                    paths=self._paths(model),
                    concurrencies=concurrencies,
                    image=self.bodies[model],
                    work=workspace.WORK / "peers" / p.key,
                    log=LOGS / f"peer-{p.key}-{model}.log",
                    load_point=point,
                )
                entry = entries[p.key]
                entry["version"] = entry["version"] or res["version"]
                entry["results"][model] = {"status": res["status"], "points": res["points"]}
                if not res["points"]:
                    print(f"    {p.label}: {res['status']}", flush=True)
                    continue
                print(f"(e) convzoo again, after {p.label}, {model}", flush=True)
                after = self.convzoo(model, concurrencies)
                entry["results"][model].update(convzoo_before=previous, convzoo_after=after)
                previous = last[model] = after
        return list(entries.values()), last

    def bare(self, concurrencies: list[int], tool: str | None = None) -> list[dict[str, Any]]:
        port = servers.free_port()
        cmd = servers.uvicorn_app(
            "bench.bare_app:create_app",
            port,
            workers=int(self.defaults.get("workers", 1)),
            log_level=str(self.defaults.get("log_level", "info")),
        )
        with servers.serve(cmd, servers.clean_env(), "/health", port, LOGS / "bare.log") as srv:
            return [
                self._load(srv, f"{srv.url}/classify", c, self.bodies[SMALL], tool=tool)
                for c in concurrencies
            ]

    def _load(
        self,
        srv: servers.Running,
        url: str,
        concurrency: int,
        body: Body,
        tool: str | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        tool = tool or self.tool
        load.run(url, concurrency=concurrency, seconds=1, body=body, tool=tool, warmup_s=0)  # warm-up
        cpu0 = srv.cpu_s()
        result = load.run(
            url, concurrency=concurrency, seconds=seconds or self.seconds, body=body, tool=tool, warmup_s=0
        )
        result["server_cpu_ms_per_request"] = (srv.cpu_s() - cpu0) * 1e3 / max(result["requests"], 1)
        print(
            f"    c={concurrency:<3} {result['images_per_s']:9.1f} images/s  p50 {result['p50_ms']:8.2f} ms  "
            f"p99 {result['p99_ms']:8.2f} ms  server CPU {result['server_cpu_ms_per_request']:.2f} ms/request  "
            f"failed {result['failed']}",
            flush=True,
        )
        return result


def host() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per load point")
    parser.add_argument("--large-seconds", type=float, default=8.0, help="the same for resnet50")
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="seconds per raw batch size")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where bench.json/md/png go")
    parser.add_argument("--no-sweep", action="store_true", help="skip the worker-model sweep")
    parser.add_argument("--tool", choices=["wrk", "python"], default=load.available_tool())
    parser.add_argument(
        "--peers",
        default=",".join(p.key for p in PEERS),
        help="comma-separated peers to run side by side (bench/peers/), or 'none'",
    )
    parser.add_argument("--no-phone", action="store_true", help="skip the phone-photo section")
    parser.add_argument(
        "--only", choices=["phone"], help="run one section alone and replace only its part of bench.json/md"
    )
    a = parser.parse_args()
    chosen = [] if a.peers == "none" else by_key([k.strip() for k in a.peers.split(",") if k.strip()])
    if a.only == "phone":
        phone = phone_run.run(chosen, host())
        report.write_phone(phone, a.out)
        print(phone_report.section(phone_report.PhoneRun.model_validate(phone)), flush=True)
        print(
            f"bench: phone photos done in {phone['wall_s']:.0f} s; wrote {a.out}/bench.json, bench.md",
            flush=True,
        )
        return
    started = time.monotonic()
    print("bench: preparing the workspace", flush=True)
    workspace.prepare()
    b = Bench(a.seconds, a.large_seconds, a.raw_seconds, a.tool)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": host(),
        "settings": b.defaults,
        "load_generator": a.tool,
        "seconds_per_point": {SMALL: a.seconds, LARGE: a.large_seconds},
    }
    conc = [1, 8, 32]
    print("(a) raw ONNX Runtime, service defaults", flush=True)
    results["raw"] = {m: b.raw(m) for m in (LARGE, SMALL)}
    for m, r in results["raw"].items():
        print(
            f"    {m}: best batch {r['best_batch']}: {r['images_per_s']:.1f} images/s, "
            f"batch-1 alone p50 {r['batches']['1']['alone_p50_ms']:.2f} ms",
            flush=True,
        )
    results["convzoo"] = {}
    for m in (LARGE, SMALL):
        print(f"(b) convzoo over HTTP, {m}", flush=True)
        results["convzoo"][m] = b.convzoo(m, conc)
    print("(c) naive FastAPI + PyTorch eager, resnet50", flush=True)
    results["naive"] = {LARGE: b.naive([1, 8])}
    print("(d) bare FastAPI constant JSON", flush=True)
    results["bare"] = b.bare(conc)
    if a.tool == "wrk":
        print("    the same with the Python load generator (its own cost on these cores)", flush=True)
        results["bare_python_loadgen"] = b.bare([32], tool="python")
    if chosen:
        results["convzoo_version"] = _revision()
        # lenet5 at c1, c8, c32 and resnet50 at c1, c8: the points of the targets
        plan = [(LARGE, [1, 8]), (SMALL, [1, 8, 32])]
        results["peers"], results["convzoo_after_peers"] = b.peers(chosen, plan, results["convzoo"])
    if not a.no_sweep:
        try:
            results["worker_model"] = sweep(b)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            # The side-by-side figures above still get written; the failure is named in the output.
            print(f"bench: the worker-model sweep failed: {exc}", file=sys.stderr, flush=True)
            results["worker_model_error"] = str(exc)
    if not a.no_phone:
        try:
            results["phone"] = phone_run.run(chosen, results["host"])
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            print(f"bench: the phone-photo section failed: {exc}", file=sys.stderr, flush=True)
            results["phone_error"] = str(exc)
    results["host"]["load_average_at_end"] = list(os.getloadavg())
    results["wall_s"] = round(time.monotonic() - started, 1)
    report.write(results, a.out)
    if chosen:
        print("\n".join(peer_report.table(results)), flush=True)
        peer_report.write(results, a.out)
    if a.out.resolve() == (ROOT / "docs").resolve():
        report.update_readme(results, ROOT / "README.md")
        if chosen:
            peer_report.update_readme(results, ROOT / "README.md")
    print(
        f"bench: done in {results['wall_s']:.0f} s; wrote {a.out}/bench.json, bench.md, bench.png", flush=True
    )


def _revision() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "this tree"


def _retry_once(measure: Callable[..., list[dict[str, Any]]], *args: Any) -> list[dict[str, Any]]:
    """One more try when a server went away mid-point (a shared host's other jobs can stop it)."""
    try:
        rows = measure(*args)
        if all(r["failed"] == 0 for r in rows):
            return rows
    except RuntimeError as exc:
        print(f"    retrying once: {exc}", flush=True)
    return measure(*args)


def sweep(b: Bench) -> list[dict[str, Any]]:
    """Every layout: resnet50 at c1 and c8 with batching, c8 without; fmnist-lenet5 at c32 with and without.

    The spinning and queue-delay variants are measured with batching only. Each layout's raw limit runs the same processes
    and inference threads in-process.
    """
    rows: list[dict[str, Any]] = []
    plan = [(LARGE, True, [1, 8]), (LARGE, False, [8]), (SMALL, True, [32]), (SMALL, False, [32])]
    raws: dict[tuple[int, int, int, bool], dict[str, Any]] = {}
    for layout in LAYOUTS:
        # measured with batching only
        variant = (
            layout.spinning or layout.max_queue_delay_us is not None or layout.batch_when_idle is not None
        )
        # The queue delay does not change the in-process limit: the same raw figure as its layout.
        key = (layout.workers, layout.intra_op_threads, layout.inference_threads, layout.spinning)
        if key not in raws:
            raws[key] = b.raw(LARGE, layout, batches="8")
        raw = raws[key]
        for model, batching, concurrencies in plan:
            if variant and not batching:
                continue
            print(
                f"worker model: {layout.label}, batching {'on' if batching else 'off'}, {model}", flush=True
            )
            for result in _retry_once(b.convzoo, model, concurrencies, layout, batching):
                rows.append(
                    {
                        "layout": asdict(layout),
                        "batching": batching,
                        "model": model,
                        **result,
                        "raw_images_per_s": raw["images_per_s"] if model == LARGE else None,
                    }
                )
    return rows


if __name__ == "__main__":
    main()
