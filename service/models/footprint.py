"""What a model costs in memory: its RSS growth measured over each load (steady, and the peak while the
session is built), the median of recent measurements, and the estimates used before anything was measured."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service.compute.memory import peak_rss_bytes, reset_peak, rss_bytes

T = TypeVar("T")

# Until a model's load has been measured, its footprint is estimated from its file: weights, ORT's copies of
# them (pre-packed convolution weights), the session's own structures.
ESTIMATE_FACTOR = 2.0
ESTIMATE_OVERHEAD_BYTES = 8_000_000
LOAD_PEAK_FACTOR = 3.0  # while loading: the serialized graph, the weights and their pre-packed copies
RECENT_LOADS = 5  # measurements a model's figure is the median of


@dataclass(frozen=True)
class LoadMemory:
    """A load's RSS growth once warmed up, and the most it grew while loading (the session build holds the
    serialized graph, the weights and their pre-packed copies at once)."""

    steady: int
    peak: int | None  # None where the peak RSS cannot be reset (not Linux)

    def at_least(self, file_bytes: int) -> LoadMemory:
        """RSS growth misses memory the heap had already touched and freed; the weights are held at least
        once."""
        peak = None if self.peak is None else max(self.peak, file_bytes)
        return LoadMemory(max(self.steady, file_bytes), peak)


class LoadMeter:
    """Measures a load's RSS growth; a measurement that overlapped another load is discarded (None)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._started = 0

    def run(self, work: Callable[[], T]) -> tuple[T, LoadMemory | None]:
        with self._lock:
            self._running += 1
            self._started += 1
            alone, mark = self._running == 1, self._started
        before = rss_bytes()
        peak_known = alone and reset_peak()
        try:
            result = work()
            after, peak = rss_bytes(), peak_rss_bytes()
        finally:
            with self._lock:
                self._running -= 1
                alone = alone and self._started == mark
        if not alone or before <= 0:
            return result, None
        steady = max(after - before, 0)
        return result, LoadMemory(steady, max(peak - before, steady) if peak_known else None)


def median_bytes(measurements: Iterable[int]) -> int:
    """Memory that other threads allocate (a running batch's activations) or free during a load moves one
    measurement either way, not the median."""
    return int(np.median(list(measurements)))


def memory_estimate(file_bytes: int, measured: int | None) -> int:
    """What the model costs loaded: measured when it was, else estimated from its file."""
    if measured is not None:
        return measured
    return int(file_bytes * ESTIMATE_FACTOR) + ESTIMATE_OVERHEAD_BYTES


def load_estimate(file_bytes: int, steady: int, measured_peak: int | None) -> int:
    """What the model costs while it loads: its measured peak, else estimated from its file; never less than
    its steady figure `steady`."""
    if measured_peak is not None:
        return max(measured_peak, steady)
    return max(int(file_bytes * LOAD_PEAK_FACTOR) + ESTIMATE_OVERHEAD_BYTES, steady)
