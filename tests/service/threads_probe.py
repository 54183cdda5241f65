"""`python -m tests.service.threads_probe`: load models through the service's runtime in a fresh process
and print, as one JSON line, the thread plan and the process's thread count before any session and after
each load. Run by tests/service/test_threads.py, in a process of its own because ONNX Runtime's global
pool is process-wide and for good, and because `--cpu` and `--cgroup` change the process itself."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from service.compute import runtime, threads
from service.core.registry import load_registry
from service.core.settings import Settings


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="load these, in this order")
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--pool", choices=["per_model", "shared"], default="per_model")
    parser.add_argument("--cpu", type=int, help="run on this CPU only (the affinity of a `taskset -c`)")
    parser.add_argument("--cgroup", type=Path, help="join this cgroup first (a directory with cgroup.procs)")
    parser.add_argument(
        "--later-intra-op-threads",
        type=int,
        help="then load the first model again with these threads in a pool of its own",
    )
    args = parser.parse_args()
    if args.cgroup is not None:
        (args.cgroup / "cgroup.procs").write_text(str(os.getpid()))
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    settings = Settings(
        registry_path=args.registry,
        models_dir=args.models_dir,
        intra_op_threads=args.intra_op_threads,
        intra_op_pool=args.pool,
        calibration_s=0,
    )
    registry = load_registry(args.registry)
    before = thread_count()
    runtime.initialise_runtime(settings)
    loaded, after = [], []
    for name in args.model:
        entry = registry.get(name)
        path = args.models_dir / entry.artifact.path
        loaded.append(runtime.load_model(path, entry, settings, max_batch_size=8))  # kept: alive
        after.append(thread_count())
    result = {"plan": dataclasses.asdict(threads.for_settings(settings)), "before": before, "after": after}
    if args.later_intra_op_threads is not None:
        update = {"intra_op_threads": args.later_intra_op_threads, "intra_op_pool": "per_model"}
        later = settings.model_copy(update=update)
        entry = registry.get(args.model[0])
        loaded.append(
            runtime.load_model(args.models_dir / entry.artifact.path, entry, later, max_batch_size=8)
        )
        result["later_plan"] = dataclasses.asdict(threads.for_settings(later))
        result["later_after"] = thread_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
