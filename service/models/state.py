"""One model's state (status, loaded session and batcher, calibration, measured footprint, use counts), its
batching policy, and the lifecycle counters /metrics reads."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from service.compute.calibration import Calibration
from service.compute.runtime import LoadedModel
from service.core import catalog
from service.core.artifacts import ArtifactMissing, file_bytes
from service.core.errors import ModelUnavailable, unavailable_error
from service.core.registry import ModelEntry
from service.core.settings import Settings
from service.models import footprint
from service.models.batcher import DynamicBatcher
from service.models.budget import Activations
from service.models.footprint import LoadMemory

log = logging.getLogger("convzoo.manager")

Status = Literal["available", "loading", "loaded", "unavailable"]
# measured: fixed + per image, at calibration; first-run: one batch-1 run after the load; estimated: the input
ActivationSource = Literal["measured", "first-run", "estimated"]


@dataclass(frozen=True)
class BatchingPolicy:
    """How a model's requests are batched: its registry entry's `batching`, else the service's settings."""

    max_batch_size: int
    max_queue_delay_us: int
    max_queue_size: int

    @classmethod
    def of(cls, entry: ModelEntry, settings: Settings) -> BatchingPolicy:
        own = entry.batching
        return cls(
            max_batch_size=own.max_batch_size if own else settings.max_batch_size,
            max_queue_delay_us=own.max_queue_delay_us if own else settings.max_queue_delay_us,
            max_queue_size=settings.max_queue_size,
        )


@dataclass
class ModelState:
    entry: ModelEntry
    policy: BatchingPolicy
    status: Status = "available"
    reason: str | None = None
    build_command: str | None = None  # set while its artifact is not there: the command that makes it
    model: LoadedModel | None = None
    batcher: DynamicBatcher | None = None
    calibration: Calibration | None = None  # kept after eviction: it was measured here
    last_used: float = 0.0
    in_flight: int = 0  # requests using or waiting for the model
    loads: int = 0  # completed loads, evictions included
    memory_bytes: int | None = None  # measured: the median RSS growth over its recent loads and warm-ups
    measurements: deque[int] = field(default_factory=lambda: deque(maxlen=footprint.RECENT_LOADS))
    load_peak_bytes: int | None = None  # measured: the median of the most RSS grew during recent loads
    peak_measurements: deque[int] = field(default_factory=lambda: deque(maxlen=footprint.RECENT_LOADS))
    activations: Activations | None = None  # measured at calibration: a batch's fixed + per-image memory
    first_image_bytes: int | None = None  # measured after loads: the most of one batch-1 run's activations
    first_images: deque[int] = field(default_factory=lambda: deque(maxlen=footprint.RECENT_LOADS))
    load_s: float | None = None  # the last load, measured: checksum, session, warm-up
    loaded_at: dt.datetime | None = None  # wall clock of the last completed load
    load_started: float | None = None  # time.monotonic() of the load in progress
    hits: int = 0  # requests since it was loaded: the frequency of greedy-dual-size-frequency
    priority: float = 0.0  # greedy-dual-size-frequency's H; the lowest idle one is evicted first
    calibrating: bool = False

    @property
    def is_loaded(self) -> bool:
        return self.status == "loaded"

    @property
    def size_bytes(self) -> int:
        return file_bytes(self.entry)

    @property
    def memory_estimate_bytes(self) -> int:
        """What the model costs loaded: measured when it was, else estimated from its file."""
        return footprint.memory_estimate(self.size_bytes, self.memory_bytes)

    @property
    def load_estimate_bytes(self) -> int:
        """What the model costs while it loads: its measured peak, else estimated from its file."""
        return footprint.load_estimate(self.size_bytes, self.memory_estimate_bytes, self.load_peak_bytes)

    @property
    def activation_figures(self) -> Activations:
        """What a batch's activations cost: measured when they were, else estimated from the input."""
        if self.activations is not None:
            return self.activations
        if self.first_image_bytes is not None:  # one run: its fixed part counted for every image
            return Activations(0, self.first_image_bytes)
        input_bytes = 4  # float32, as the batch is fed
        for dim in self.entry.input.shape[1:]:
            input_bytes *= dim if isinstance(dim, int) else 1
        return footprint.activation_estimate(input_bytes)

    @property
    def activation_fixed_bytes(self) -> int:
        return self.activation_figures.fixed

    @property
    def activation_per_image_bytes(self) -> int:
        return self.activation_figures.per_image

    @property
    def activation_source(self) -> ActivationSource:
        if self.activations is not None:
            return "measured"
        return "first-run" if self.first_image_bytes is not None else "estimated"

    @property
    def idle(self) -> bool:
        """No request uses or waits for it and its batcher has nothing queued or running."""
        return self.in_flight == 0 and (self.batcher is None or self.batcher.idle)

    def record_memory(self, measured: LoadMemory | None) -> None:
        """Take a load's measurement into the model's figures (the medians of its recent loads)."""
        if measured is None:
            return
        if measured.first_image is not None:  # one run each: the most, as memory freed meanwhile lowers one
            self.first_images.append(measured.first_image)
            self.first_image_bytes = max(self.first_images)
        self.measurements.append(measured.steady)
        self.memory_bytes = footprint.median_bytes(self.measurements)
        if measured.peak is not None:
            self.peak_measurements.append(measured.peak)
            self.load_peak_bytes = footprint.median_bytes(self.peak_measurements)

    def mark_unavailable(self, reason: str) -> None:
        self.status, self.reason = "unavailable", reason
        log.warning("model %s is unavailable: %s", self.entry.name, reason)

    def mark_not_built(self, what: str) -> None:
        # One line at start-up sums these up (service.core.catalog.summary): a checkout without the ImageNet
        # artifacts has two dozen of them, which is expected, not a warning each.
        self.build_command = catalog.build_command(self.entry)
        self.status = "unavailable"
        self.reason = f"{what}; `{self.build_command}` builds it"
        log.debug("model %s is not built: %s", self.entry.name, self.reason)

    def mark_failed(self, exc: Exception) -> None:
        """A load or calibration that failed: not built when its file is gone, else unavailable."""
        if isinstance(exc, ArtifactMissing):  # removed since start-up
            self.mark_not_built(str(exc))
        else:
            self.mark_unavailable(str(exc))

    def unavailable(self) -> ModelUnavailable:
        return unavailable_error(self)

    def unload(self) -> None:
        """Stop its batcher and drop the session; a loaded model becomes available again."""
        if self.batcher is not None:
            self.batcher.stop()
        self.batcher, self.model = None, None
        if self.status == "loaded":
            self.status = "available"


class Named:
    """A version's state under the name a request used: NAME for the version its policy serves, or
    NAME@VERSION for the entry's own version. Everything but the entry's name is the state's own."""

    def __init__(self, state: ModelState, name: str) -> None:
        self.state = state
        self.entry = state.entry.model_copy(update={"name": name})

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.state, attr)


@dataclass
class LifecycleStats:
    """Counters of loads, evictions and calibrations since start-up (read by /metrics)."""

    loads: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, "ok" | "failed")
    load_seconds: dict[str, float] = field(default_factory=dict)  # per model, completed loads
    evictions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, reason)
    # (model, "after-load" | "background")
    calibrations: Counter[tuple[str, str]] = field(default_factory=Counter)
