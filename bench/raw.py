"""(a) The limit: raw ONNX Runtime in-process, through the service's own session code and settings.

`python -m bench.raw --model NAME --processes P` prints one JSON object: per batch size, images/s summed
over P processes running at once, each with CONVZOO_INFERENCE_THREADS threads running batches back to back
(the parallelism the server has), batch latency p50/p99 under that load, and for batch 1 the latency of
one run alone. Thread settings come from the same CONVZOO_* variables as the server's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.compute.runtime import LoadedModel, load_model
from service.core.registry import load_registry
from service.core.settings import Settings


def _loop(model: LoadedModel, batch: np.ndarray, seconds: float, times: list[float]) -> None:
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 5000):
        t0 = time.perf_counter()
        model.run(batch)
        times.append(time.perf_counter() - t0)


def _streams(
    model: LoadedModel, batch: np.ndarray, seconds: float, streams: int
) -> tuple[float, list[float]]:
    """`streams` threads running `batch` back to back, as the service's inference threads do."""
    per_thread: list[list[float]] = [[] for _ in range(streams)]
    threads = [threading.Thread(target=_loop, args=(model, batch, seconds, t)) for t in per_thread]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    runs = sum(len(t) for t in per_thread)
    return len(batch) * runs / elapsed, [x for t in per_thread for x in t]


def _measure(args: tuple[str, str, list[int], float, Any, int]) -> dict[int, dict[str, float]]:
    registry_path, name, batches, seconds, barrier, index = args
    settings = Settings(registry_path=Path(registry_path), calibration_s=0)
    entry = load_registry(settings.registry_path).get(name)
    model = load_model(
        settings.models_dir / entry.artifact.path, entry, settings, max_batch_size=max(batches)
    )
    rng = np.random.default_rng(index)
    out: dict[int, dict[str, float]] = {}
    for size in batches:
        batch = rng.standard_normal((size, *model.sample_shape)).astype(np.float32)
        model.run(batch)  # warm this shape up
        barrier.wait()  # every process measures the same batch size at the same time
        images_per_s, times = _streams(model, batch, seconds, settings.inference_threads)
        arr = np.asarray(times) * 1e3
        out[size] = {
            "images_per_s": images_per_s,
            "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)),
            "runs": len(times),
        }
    if 1 in batches:
        # One request alone: batch 1, one stream, nothing else running (process 0 only).
        barrier.wait()
        if index == 0:
            times = []
            _loop(model, rng.standard_normal((1, *model.sample_shape)).astype(np.float32), seconds, times)
            arr = np.asarray(times) * 1e3
            out[1]["alone_p50_ms"] = float(np.percentile(arr, 50))
            out[1]["alone_p99_ms"] = float(np.percentile(arr, 99))
        barrier.wait()
    return out


def measure(
    registry_path: Path, name: str, *, batches: list[int], seconds: float, processes: int
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(processes)
    with ctx.Pool(processes) as pool:
        results = pool.map(
            _measure, [(str(registry_path), name, batches, seconds, barrier, i) for i in range(processes)]
        )
    per_batch = {
        str(size): {
            "images_per_s": sum(r[size]["images_per_s"] for r in results),
            "p50_ms": results[0][size]["p50_ms"],
            "p99_ms": results[0][size]["p99_ms"],
            "runs": sum(int(r[size]["runs"]) for r in results),
            **{k: v for k, v in results[0][size].items() if k.startswith("alone_")},
        }
        for size in batches
    }
    best = max(per_batch, key=lambda k: per_batch[k]["images_per_s"])
    return {
        "model": name,
        "processes": processes,
        "batches": per_batch,
        "best_batch": int(best),
        "images_per_s": per_batch[best]["images_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=1)
    a = parser.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    print(json.dumps(measure(a.registry, a.model, batches=batches, seconds=a.seconds, processes=a.processes)))


if __name__ == "__main__":
    main()
