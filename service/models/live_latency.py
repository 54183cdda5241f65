"""Recent end-to-end inference latencies per model (queueing included), from the batchers' records."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from service.models.batcher import BatchRecord

WINDOW_S = 30.0  # only the last half minute speaks for "now"
MIN_SAMPLES = 20  # fewer than this, and the calibration speaks instead
MAX_SAMPLES = 2000  # per model


class RecentLatencies:
    """A rolling window of per-image latencies (queue wait + batch compute), one deque per model."""

    def __init__(self, *, window_s: float = WINDOW_S, min_samples: int = MIN_SAMPLES) -> None:
        self.window_s = window_s
        self.min_samples = min_samples
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()  # records arrive on the batchers' threads

    def record(self, batch: BatchRecord) -> None:
        if not batch.ok:
            return
        now = time.monotonic()
        with self._lock:
            samples = self._samples.setdefault(batch.model, deque(maxlen=MAX_SAMPLES))
            for queue_ns in batch.queue_ns:
                samples.append((now, (queue_ns + batch.compute_ns) / 1e6))

    def p50_ms(self, model: str) -> tuple[float, int] | None:
        """The median of the model's recent latencies and their count, or None with too few."""
        since = time.monotonic() - self.window_s
        with self._lock:
            values = [ms for t, ms in self._samples.get(model, ()) if t >= since]
        if len(values) < self.min_samples:
            return None
        return float(np.median(values)), len(values)
