"""The statistics extension: cumulative per-model counts and durations, fed by the batchers' hooks.

The batcher schedules images, not requests, so an inference request of N images counts N in
`success`, `queue` and the `compute_*` counts (Triton counts it once; `inference_count` is N either
way). `compute_infer` covers the whole batch step (stacking, ONNX Runtime, output copy): the split
into `compute_input` and `compute_output` is not measured, so those report the same count and 0 ns.
Counts live for the life of the process and survive a model's eviction and reload.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from service.models.batcher import BatchRecord


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, count: int, ns: int) -> None:
        self.count += count
        self.ns += ns

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchSize:
    compute_infer: Duration = field(default_factory=Duration)


@dataclass
class _ModelStatistics:
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, _BatchSize] = field(default_factory=lambda: defaultdict(_BatchSize))


class Statistics:
    """Thread-safe: `record` runs on inference threads, `model_stat` on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _ModelStatistics] = defaultdict(_ModelStatistics)

    def record(self, batch: BatchRecord) -> None:
        """A batcher hook: account one executed batch."""
        n = batch.size
        queue_ns = sum(batch.queue_ns)
        with self._lock:
            s = self._models[batch.model]
            s.last_inference_ms = int(time.time() * 1000)
            if not batch.ok:
                s.fail.add(n, queue_ns + n * batch.compute_ns)
                return
            s.inference_count += n
            s.execution_count += 1
            s.success.add(n, queue_ns + n * batch.compute_ns)
            s.queue.add(n, queue_ns)
            s.compute_infer.add(n, n * batch.compute_ns)
            s.batches[n].compute_infer.add(1, batch.compute_ns)

    def model_stat(self, name: str, version: str) -> dict[str, Any]:
        """One `$model_stat` object of the statistics response."""
        with self._lock:
            s = self._models.get(name) or _ModelStatistics()
            infer = s.compute_infer.json()
            unmeasured = {"count": s.compute_infer.count, "ns": 0}
            return {
                "name": name,
                "version": version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": s.success.json(),
                    "fail": s.fail.json(),
                    "queue": s.queue.json(),
                    "compute_input": unmeasured,
                    "compute_infer": infer,
                    "compute_output": dict(unmeasured),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": {"count": b.compute_infer.count, "ns": 0},
                        "compute_infer": b.compute_infer.json(),
                        "compute_output": {"count": b.compute_infer.count, "ns": 0},
                    }
                    for size, b in sorted(s.batches.items())
                ],
            }
