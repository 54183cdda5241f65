"""What a model costs in memory: its RSS growth measured over each load (steady, and the peak while the
session is built), the median of recent measurements, the activations of a batch (fixed + per image, measured
at calibration), and the estimates used before anything was measured."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service.compute.memory import peak_rss_bytes, reset_peak, rss_bytes, trim_heap
from service.models.budget import Activations

T = TypeVar("T")

# Until a model's load has been measured, its footprint is estimated from its file: weights, ORT's copies of
# them (pre-packed convolution weights), the session's own structures.
ESTIMATE_FACTOR = 2.0
ESTIMATE_OVERHEAD_BYTES = 8_000_000
LOAD_PEAK_FACTOR = 3.0  # while loading: the serialized graph, the weights and their pre-packed copies
RECENT_LOADS = 5  # measurements a model's figure is the median of
# Until a model's activations have been measured, an image's are estimated at this many times its input's
# bytes, plus a constant. Measured with the CPU arena off (peak RSS growth of one run, heap trimmed): 7x the
# input for resnet18, 12x resnet50, 19x densenet121, 21x efficientnet_b0 (12.9 MB an image); 22x
# fmnist-lenet5 to 77x fmnist-resnet-v1 (0.24 MB), which the constant covers. Linear in the batch from 1 to
# 32 within 1%, with no fixed part above 0.5 MB.
ACTIVATION_INPUT_FACTOR = 64
ACTIVATION_IMAGE_BYTES = 512 * 1024
ACTIVATION_REPEATS = 3  # runs at each batch size; their median is taken
ACTIVATION_RETRY_S = 0.2  # after a run that a load overlapped


@dataclass(frozen=True)
class LoadMemory:
    """A load's RSS growth once warmed up, and the most it grew while loading (the session build holds the
    serialized graph, the weights and their pre-packed copies at once)."""

    steady: int
    peak: int | None  # None where the peak RSS cannot be reset (not Linux)
    first_image: int | None = None  # the most one batch-1 run after the load grew the RSS: its activations

    def at_least(self, file_bytes: int) -> LoadMemory:
        """RSS growth misses memory the heap had already touched and freed; the weights are held at least
        once."""
        peak = None if self.peak is None else max(self.peak, file_bytes)
        return LoadMemory(max(self.steady, file_bytes), peak, self.first_image)


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

    @property
    def loading(self) -> bool:
        """A load is being measured now."""
        return self._running > 0

    def probe(self, work: Callable[[], object]) -> int | None:
        """The most the RSS grew while `work` ran (a batch's activations), or None without running it while
        a load is measured. Loads come first: the peak is reset only while none runs (under the lock loads
        start with), and a load that starts meanwhile voids the probe, never the other way round."""
        with self._lock:
            if self._running:
                return None
            mark = self._started
            before = rss_bytes()
            if not reset_peak():
                return None
        work()
        grown = peak_rss_bytes() - before
        with self._lock:
            overlapped = self._started != mark
        return None if overlapped or before <= 0 else max(grown, 0)


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


def activation_estimate(input_bytes_per_image: int) -> Activations:
    """A batch's activations before anything was measured: per image, a multiple of the input and a
    constant that exceeded every model measured (ACTIVATION_INPUT_FACTOR)."""
    return Activations(0, ACTIVATION_INPUT_FACTOR * input_bytes_per_image + ACTIVATION_IMAGE_BYTES)


def measure_activations(run: Callable[[int], object], meter: LoadMeter, largest: int) -> Activations | None:
    """A model's activations, fitted to the most its RSS grew during runs at batch 1 and at `largest`
    (the C heap trimmed before each, so freed pages are not reused unseen): fixed + per image. None when
    loads kept overlapping the runs (the peak RSS is the process's; a load's measurement comes first)."""
    peaks: dict[int, int] = {}
    for size in sorted({1, max(largest, 1)}):
        grown: list[int] = []
        for _ in range(ACTIVATION_REPEATS * 3):  # a run that a load voided is tried again, a few times
            trim_heap()
            measured = meter.probe(functools.partial(run, size))
            if measured is not None:
                grown.append(measured)
            if len(grown) == ACTIVATION_REPEATS:
                break
            if measured is None:
                time.sleep(ACTIVATION_RETRY_S)
        if not grown:
            return None
        peaks[size] = median_bytes(grown)
    if len(peaks) == 1:  # one size only: all of it per image
        return Activations(0, peaks[1])
    per_image = (peaks[largest] - peaks[1]) // (largest - 1)
    if per_image <= 0:  # another thread freed memory during a run: charge the larger peak per image
        return Activations(0, max(peaks.values()))
    return Activations(max(peaks[1] - per_image, 0), per_image)
