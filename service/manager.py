"""Per-model state: safe artifact resolution, checksum, lazy and parallel loading, preloading, the memory
budget with measured footprints and size- and frequency-aware eviction, and calibration off the request path
(docs/model-lifecycle.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from service.batcher import BatchRecord, DynamicBatcher, InferTimings
from service.errors import (
    DeadlineExceeded,
    ModelUnavailable,
    NotReady,
    Overloaded,
    ServiceError,
    unknown_model,
)
from service.memory import bound_heap, peak_rss_bytes, reset_peak, rss_bytes, trim_heap
from service.registry import ModelEntry, Registry, full_decoding, load_registry, sha256_file
from service.runtime import (
    Calibration,
    LoadedModel,
    RuntimeUnavailable,
    calibrate,
    initialise_runtime,
    load_model,
)
from service.settings import Settings

log = logging.getLogger("convzoo.manager")

Status = Literal["available", "loading", "loaded", "unavailable"]
EvictionReason = Literal["budget", "rss", "manual"]
T = TypeVar("T")

# Until a model's load has been measured, its footprint is estimated from its file: weights, ORT's copies of
# them (pre-packed convolution weights), the session's own structures.
ESTIMATE_FACTOR = 2.0
ESTIMATE_OVERHEAD_BYTES = 8_000_000
LOAD_PEAK_FACTOR = 3.0  # while loading: the serialized graph, the weights and their pre-packed copies
BACKGROUND_RETRY_S = 2.0  # a model that did not fit the budget is tried again after this
BACKGROUND_PASSES = 30


class ArtifactProblem(Exception):
    """An artifact that must not be loaded; the message is safe to show to clients."""


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
    model: LoadedModel | None = None
    batcher: DynamicBatcher | None = None
    calibration: Calibration | None = None  # kept after eviction: it was measured here
    last_used: float = 0.0
    in_flight: int = 0  # requests using or waiting for the model
    loads: int = 0  # completed loads, evictions included
    memory_bytes: int | None = None  # measured: the median RSS growth over its recent loads and warm-ups
    measurements: deque[int] = field(default_factory=lambda: deque(maxlen=5))
    load_peak_bytes: int | None = None  # measured: the median of the most RSS grew during recent loads
    peak_measurements: deque[int] = field(default_factory=lambda: deque(maxlen=5))
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
        if self.entry.artifact.bytes is not None:
            return self.entry.artifact.bytes
        return int((self.entry.metrics.size_mb or 0.0) * 1_000_000)

    @property
    def memory_estimate_bytes(self) -> int:
        """What the model costs loaded: measured when it was, else estimated from its file."""
        if self.memory_bytes is not None:
            return self.memory_bytes
        return int(self.size_bytes * ESTIMATE_FACTOR) + ESTIMATE_OVERHEAD_BYTES

    @property
    def load_estimate_bytes(self) -> int:
        """What the model costs while it loads: its measured peak, else estimated from its file."""
        if self.load_peak_bytes is not None:
            return max(self.load_peak_bytes, self.memory_estimate_bytes)
        return max(
            int(self.size_bytes * LOAD_PEAK_FACTOR) + ESTIMATE_OVERHEAD_BYTES, self.memory_estimate_bytes
        )


@dataclass
class LifecycleStats:
    """Counters of loads, evictions and calibrations since start-up (read by /metrics)."""

    loads: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, "ok" | "failed")
    load_seconds: dict[str, float] = field(default_factory=dict)  # per model, completed loads
    evictions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, reason)
    # (model, "after-load" | "background")
    calibrations: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True)
class LoadMemory:
    """A load's RSS growth once warmed up, and the most it grew while loading (the session build holds the
    serialized graph, the weights and their pre-packed copies at once)."""

    steady: int
    peak: int | None  # None where the peak RSS cannot be reset (not Linux)


class _LoadMeter:
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


def _at_least_the_file(measured: LoadMemory | None, entry: ModelEntry) -> LoadMemory | None:
    # RSS growth misses memory the heap had already touched and freed; the weights are held at least once.
    if measured is None:
        return None
    floor = entry.artifact.bytes or 0
    peak = None if measured.peak is None else max(measured.peak, floor)
    return LoadMemory(max(measured.steady, floor), peak)


def resolve_artifact(models_dir: Path, relative: str) -> Path:
    """The artifact's real path, which must stay inside `models_dir` (no `..`, absolute paths, escaping links)."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArtifactProblem("the artifact path in the registry is not inside the model directory")
    root = models_dir.resolve()
    try:
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ArtifactProblem("the artifact file is missing") from None
    if not real.is_relative_to(root):
        raise ArtifactProblem("the artifact path in the registry is not inside the model directory")
    if not real.is_file():
        raise ArtifactProblem("the artifact is not a regular file")
    return real


class ModelManager:
    """Owns the registry and every model's state; all methods run on the event loop."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        batch_hooks: Sequence[Callable[[BatchRecord], None]] = (),
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.models_dir = settings.models_dir
        self._states = {
            m.name: ModelState(entry=m, policy=BatchingPolicy.of(m, settings)) for m in registry.models
        }
        # Loading is blocking work (hashing, ORT session build, warm-up): its own threads, off the loop;
        # loads of different models run in parallel, up to `load_threads`.
        self._loader = ThreadPoolExecutor(
            max_workers=settings.load_threads, thread_name_prefix="model-loader"
        )
        # Calibration, after a load or in the background: one thread, one model at a time.
        self._calibrator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration")
        self._loads: dict[str, asyncio.Task[ServiceError | None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._preload_task: asyncio.Task[None] | None = None
        self._reserved: dict[str, int] = {}  # bytes of the private sessions that background calibration holds
        self._clock = 0.0  # greedy-dual-size-frequency's L: the priority of the last model evicted
        self._meter = _LoadMeter()
        self._stopping = False
        self.baseline_rss_bytes = 0  # the process before any model: the budget bounds RSS above it
        self.stats = LifecycleStats()
        # Called with every batch any model's batcher runs (metrics, statistics, live latencies).
        self.batch_hooks = tuple(batch_hooks)
        for state in self._states.values():
            self._static_checks(state)

    @classmethod
    def from_settings(
        cls, settings: Settings, batch_hooks: Sequence[Callable[[BatchRecord], None]] = ()
    ) -> ModelManager:
        registry = load_registry(settings.registry_path)
        if not settings.reduce_at_decode:
            registry = full_decoding(registry)
        return cls(registry, settings, batch_hooks)

    # ---- lifecycle -----------------------------------------------------------------------------------

    @property
    def default(self) -> str:
        return self.registry.default

    def preload_names(self) -> list[str]:
        names = self.settings.preload if self.settings.preload is not None else [self.default]
        unknown = [n for n in names if n not in self._states]
        if unknown:
            raise ValueError(f"Unknown model {unknown[0]}")
        return names

    def required_names(self) -> list[str]:
        """The models readiness waits for and eviction never touches: the default and the preloads."""
        names = self.preload_names()
        return names if self.default in names else [self.default, *names]

    def start(self) -> None:
        """Load the default and the preloads in the background, then calibrate every other model."""
        bound_heap()
        initialise_runtime(self.settings)
        trim_heap()
        self.baseline_rss_bytes = rss_bytes()
        self._preload_task = asyncio.create_task(self._preload(self.required_names()))
        if self.settings.background_calibration and self.settings.calibration_s > 0:
            self._spawn(self._calibrate_all())

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _preload(self, names: list[str]) -> None:
        """Load in parallel; readiness follows the loads, then their calibrations are awaited too."""
        results = await asyncio.gather(*(self.ensure_loaded(n) for n in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):  # recorded on the model's state; the others still load
                log.warning("preload of %s failed: %s", name, result)
        for name in names:
            state = self._states[name]
            if state.is_loaded and state.model is not None and state.calibration is None:
                await self._calibrate_loaded(state, "after-load")

    async def wait_preloaded(self) -> None:
        """Until the default and the preloads are loaded and calibrated (or failed)."""
        if self._preload_task is not None:
            await asyncio.shield(self._preload_task)

    async def stop(self) -> None:
        self._stopping = True
        for task in [self._preload_task, *self._background, *self._loads.values()]:
            if task is not None and not task.done():
                task.cancel()
        for state in self._states.values():
            self._unload(state)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._calibrator.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> tuple[bool, str]:
        ok, reason, _ = self.readiness()
        return ok, reason

    def readiness(self) -> tuple[bool, str, dict[str, list[str]]]:
        """Ready when the default and every preloaded model are loaded and warmed up; says what is not."""
        names = self.required_names()
        states = [self._states[n] for n in names]
        broken = [s for s in states if s.status == "unavailable"]
        waiting = [s for s in states if s.status in ("available", "loading")]
        lists = {
            "loaded": [s.entry.name for s in states if s.is_loaded],
            "loading": [s.entry.name for s in waiting],
            "unavailable": [s.entry.name for s in broken],
        }
        if broken:
            reasons = "; ".join(f"{self._role(s)} {s.entry.name} is unavailable: {s.reason}" for s in broken)
            return False, reasons, lists
        if waiting:
            still = ", ".join(f"{self._role(s)} {s.entry.name} ({s.status})" for s in waiting)
            return False, f"still loading, not yet warmed up: {still}", lists
        others = [n for n in names if n != self.default]
        also = f" and preloaded model(s) {', '.join(others)} are" if others else " is"
        return True, f"default model {self.default}{also} loaded and warmed up", lists

    def _role(self, state: ModelState) -> str:
        return "default model" if state.entry.name == self.default else "preloaded model"

    # ---- lookups ---------------------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        return self.state(name).entry

    def state(self, name: str) -> ModelState:
        try:
            return self._states[name]
        except KeyError:
            raise unknown_model(name) from None

    def labels(self, name: str) -> list[str]:
        return self.registry.labels_of(self.entry(name).name)

    def states(self) -> list[ModelState]:
        return list(self._states.values())

    # ---- loading -------------------------------------------------------------------------------------

    def _static_checks(self, state: ModelState) -> None:
        entry = state.entry
        reason = None
        if not entry.built:
            reason = "the artifact is not built"
        elif entry.weights.kind == "random" and not self.settings.allow_random_weights:
            reason = "random weights are served only with CONVZOO_ALLOW_RANDOM_WEIGHTS=true"
        elif state.size_bytes > self.settings.memory_budget_bytes:
            reason = "the model is larger than the memory budget (CONVZOO_MEMORY_BUDGET_MB)"
        else:
            try:
                resolve_artifact(self.models_dir, entry.artifact.path)
            except ArtifactProblem as exc:
                reason = str(exc)
        if reason is not None:
            self._mark_unavailable(state, reason)

    def _mark_unavailable(self, state: ModelState, reason: str) -> None:
        state.status, state.reason = "unavailable", reason
        log.warning("model %s is unavailable: %s", state.entry.name, reason)

    def _unavailable(self, state: ModelState) -> ModelUnavailable:
        return ModelUnavailable(f"Model {state.entry.name} is unavailable: {state.reason}.")

    async def ensure_loaded(self, name: str, *, deadline: float | None = None) -> ModelState:
        """The model's loaded state; the first caller starts the load, concurrent callers share it.

        With a `deadline` (time.monotonic()), a caller waits for the load only while the deadline allows:
        when the load is expected to take longer, DeadlineExceeded at once, with the expected time as
        Retry-After. The load itself goes on, so that the retry finds the model loaded."""
        state = self.state(name)
        if state.is_loaded:
            return state
        if state.status == "unavailable":
            raise self._unavailable(state)
        task = self._loads.get(name)
        if task is None:
            self._make_room(state)
            task = self._start_load(state)
        error = await self._wait_for_load(state, task, deadline)
        if error is not None:
            raise error
        if not state.is_loaded:  # evicted between its load and this caller's turn
            raise ModelUnavailable(f"Model {name} was unloaded; retry.", retry_after_s=1)
        return state

    def _start_load(self, state: ModelState) -> asyncio.Task[ServiceError | None]:
        name = state.entry.name
        state.status, state.load_started = "loading", time.monotonic()
        task = asyncio.create_task(self._load(state), name=f"load-{name}")
        self._loads[name] = task
        task.add_done_callback(lambda _: self._loads.pop(name, None))
        return task

    async def _wait_for_load(
        self, state: ModelState, task: asyncio.Task[ServiceError | None], deadline: float | None
    ) -> ServiceError | None:
        if deadline is None:
            return await asyncio.shield(task)
        name = state.entry.name
        remaining = deadline - time.monotonic()
        expected = self.expected_load_remaining_s(state)
        run_s = state.calibration.p50_ms / 1e3 if state.calibration else 0.0
        if expected is not None and expected + run_s > remaining:
            raise DeadlineExceeded(
                f"Model {name} is loading and needs about {expected:.1f} s more, longer than the request's "
                "deadline allows; retry.",
                retry_after_s=max(expected, 1.0),
            )
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await asyncio.shield(task)
        except TimeoutError:
            left = self.expected_load_remaining_s(state)
            raise DeadlineExceeded(
                f"The request's deadline passed while model {name} was loading; retry.",
                retry_after_s=max(left or 1.0, 1.0),
            ) from None

    def expected_load_remaining_s(self, state: ModelState) -> float | None:
        """Seconds until the model is loaded, from its last measured load; None if never measured."""
        if state.load_s is None:
            return None
        elapsed = 0.0
        if state.status == "loading" and state.load_started is not None:
            elapsed = time.monotonic() - state.load_started
        return max(state.load_s - elapsed, 0.0)

    async def _load(self, state: ModelState) -> ServiceError | None:
        """One load on the loader threads; the outcome is recorded on the state, also when nobody waits."""
        name = state.entry.name
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            model, measured = await loop.run_in_executor(self._loader, self._load_blocking, state.entry)
        except (ArtifactProblem, RuntimeUnavailable) as exc:
            return self._load_failed(state, str(exc))
        except Exception:
            log.exception("loading model %s failed", name)
            return self._load_failed(state, "ONNX Runtime could not load the artifact")
        seconds = time.perf_counter() - started
        if self._stopping:
            return ModelUnavailable("The service is shutting down.", retry_after_s=1)
        self._install(state, model, seconds, measured)
        self._enforce_budget(keep=state)
        if (
            state.calibration is None
            and self.settings.calibration_s > 0
            and name not in self.required_names()
        ):
            self._spawn(self._calibrate_loaded(state, "after-load"))
        return None

    def _load_failed(self, state: ModelState, reason: str) -> ServiceError:
        self.stats.loads[(state.entry.name, "failed")] += 1
        self._mark_unavailable(state, reason)
        return self._unavailable(state)

    def _load_blocking(self, entry: ModelEntry) -> tuple[LoadedModel, LoadMemory | None]:
        path = resolve_artifact(self.models_dir, entry.artifact.path)
        if sha256_file(path) != entry.artifact.sha256:
            raise ArtifactProblem("the artifact's sha256 does not match the registry")
        started = time.perf_counter()
        model, growth = self._meter.run(
            lambda: load_model(path, entry, self.settings, max_batch_size=self.max_batch_size_of(entry))
        )
        measured = _at_least_the_file(growth, entry)
        log.info(
            "model %s loaded in %.2f s on %s, %s",
            entry.name,
            time.perf_counter() - started,
            model.providers[0],
            f"{measured.steady / 1e6:.1f} MB measured"
            + (f", {measured.peak / 1e6:.1f} MB at its peak" if measured.peak else "")
            if measured is not None
            else "memory not measured (parallel load)",
        )
        return model, measured

    def max_batch_size_of(self, entry: ModelEntry) -> int:
        return self.state(entry.name).policy.max_batch_size

    def _install(
        self, state: ModelState, model: LoadedModel, seconds: float, measured: LoadMemory | None
    ) -> None:
        entry = state.entry
        state.batcher = DynamicBatcher(
            entry.name,
            model.run,
            max_batch_size=model.max_batch_size,
            max_queue_delay_us=state.policy.max_queue_delay_us,
            max_queue_size=state.policy.max_queue_size,
            threads=self.settings.inference_threads,
            hooks=self.batch_hooks,
            when_idle=self.settings.batch_when_idle,
        )
        state.model = model
        model.calibration = state.calibration
        state.loads += 1
        state.status, state.reason = "loaded", None
        state.last_used = time.monotonic()
        state.load_s, state.loaded_at, state.load_started = seconds, dt.datetime.now(dt.UTC), None
        self._record_memory(state, measured)
        state.hits = 1
        state.priority = self._clock + self._value(state)
        self.stats.loads[(entry.name, "ok")] += 1
        self.stats.load_seconds[entry.name] = self.stats.load_seconds.get(entry.name, 0.0) + seconds

    @staticmethod
    def _record_memory(state: ModelState, measured: LoadMemory | None) -> None:
        # The median of the recent measurements: memory that other threads allocate (a running batch's
        # activations) or free during a load moves one measurement either way, not the median.
        if measured is None:
            return
        state.measurements.append(measured.steady)
        state.memory_bytes = int(np.median(state.measurements))
        if measured.peak is not None:
            state.peak_measurements.append(measured.peak)
            state.load_peak_bytes = int(np.median(state.peak_measurements))

    def _unload(self, state: ModelState) -> None:
        if state.batcher is not None:
            state.batcher.stop()
        state.batcher, state.model = None, None
        if state.status == "loaded":
            state.status = "available"

    def unload(self, name: str) -> bool:
        """Unload an idle, unpinned model now (operations and tests); False when it is in use or pinned."""
        state = self.state(name)
        if state not in self._evictable(exclude=None):
            return False
        self._evict(state, "manual")
        return True

    # ---- memory budget -------------------------------------------------------------------------------

    def loaded_bytes(self) -> int:
        """The memory the budget counts: loaded models, loading ones at their load peak, and background
        calibration's sessions."""
        loaded = sum(s.memory_estimate_bytes for s in self._states.values() if s.status == "loaded")
        loading = sum(s.load_estimate_bytes for s in self._states.values() if s.status == "loading")
        return loaded + loading + sum(self._reserved.values())

    def _value(self, state: ModelState) -> float:
        """Greedy-dual-size-frequency with a uniform cost: requests per MB. A small, often used model stays;
        a big one loaded for one request goes first. Each miss counts alike: a load's time mostly follows
        the model's size, which the formula has already, and varies with the machine's load."""
        return state.hits / max(state.memory_estimate_bytes / 1e6, 0.001)

    def _touch(self, state: ModelState) -> None:
        state.hits += 1
        state.priority = self._clock + self._value(state)
        state.last_used = time.monotonic()

    def _evictable(self, exclude: ModelState | None) -> list[ModelState]:
        pinned = set(self.required_names())
        return [
            s
            for s in self._states.values()
            if s.is_loaded
            and s is not exclude
            and s.entry.name not in pinned
            and s.in_flight == 0
            and (s.batcher is None or s.batcher.idle)
        ]

    def _evict(self, victim: ModelState, reason: EvictionReason) -> None:
        self._clock = max(self._clock, victim.priority)
        log.info(
            "evicting model %s (%s; priority %.4g, %d requests since loaded)",
            victim.entry.name,
            reason,
            victim.priority,
            victim.hits,
        )
        self._unload(victim)
        self.stats.evictions[(victim.entry.name, reason)] += 1
        trim_heap()

    def _pinned_bytes(self, exclude: ModelState) -> int:
        pinned = set(self.required_names())
        return sum(
            s.memory_estimate_bytes
            for s in self._states.values()
            if s is not exclude and s.entry.name in pinned and s.status in ("loaded", "loading")
        )

    def _make_room(self, incoming: ModelState) -> None:
        """Evict the idle models of lowest priority until `incoming` fits the budget."""
        budget = self.settings.memory_budget_bytes
        room = budget - self._pinned_bytes(exclude=incoming)  # what eviction can ever make free
        if incoming.memory_bytes is not None and incoming.memory_bytes > room:
            self._mark_unavailable(
                incoming,
                f"the model needs {incoming.memory_bytes / 1e6:.0f} MB (measured), more than the memory budget "
                f"leaves beside the default and preloaded models ({max(room, 0) / 1e6:.0f} MB)",
            )
            raise self._unavailable(incoming)
        need = min(incoming.load_estimate_bytes, max(room, 0))  # an estimate may be too high: try
        while self.loaded_bytes() + need > budget:
            candidates = self._evictable(exclude=incoming)
            freeable = sum(c.memory_estimate_bytes for c in candidates)
            if self.loaded_bytes() - freeable + need > budget:
                # Evicting what is idle would not make room (the rest is in use): evict nothing, so that a
                # small idle model is not unloaded for a load that cannot happen anyway.
                loading = [
                    self.expected_load_remaining_s(s) or 1.0
                    for s in self._states.values()
                    if s.status == "loading"
                ]
                raise Overloaded(
                    f"No memory to load model {incoming.entry.name} now: the loaded models are in use or "
                    "pinned; retry.",
                    retry_after_s=max([2.0, *loading]),
                )
            self._evict(min(candidates, key=lambda s: s.priority), "budget")

    def process_bytes(self) -> int:
        """The process's RSS above its baseline before any model was loaded."""
        return max(rss_bytes() - self.baseline_rss_bytes, 0)

    def _enforce_budget(self, keep: ModelState) -> None:
        """After a load, whose footprint is now measured: while the accounted memory or the process's RSS
        above its baseline exceeds the budget, evict idle models of lowest priority."""
        budget = self.settings.memory_budget_bytes
        while True:
            if self.loaded_bytes() > budget:
                reason: EvictionReason = "budget"
            elif self.baseline_rss_bytes > 0 and self.process_bytes() > budget:
                reason = "rss"
            else:
                return
            candidates = self._evictable(exclude=keep)
            over = (self.loaded_bytes() if reason == "budget" else self.process_bytes()) - budget
            if sum(c.memory_estimate_bytes for c in candidates) < over:
                log.warning(
                    "over the memory budget (%.0f MB accounted, RSS %.0f MB above baseline, budget %.0f MB) "
                    "and the idle models would not make up for it: nothing evicted",
                    self.loaded_bytes() / 1e6,
                    self.process_bytes() / 1e6,
                    budget / 1e6,
                )
                return
            self._evict(min(candidates, key=lambda s: s.priority), reason)

    # ---- calibration -----------------------------------------------------------------------------------

    async def _calibrate_loaded(self, state: ModelState, kind: str) -> None:
        """Calibrate a served model on the calibration thread, beside its traffic. No reference to the
        session is held while waiting for the thread: an eviction meanwhile frees its memory at once."""
        if state.calibrating or state.calibration is not None or not state.is_loaded:
            return
        state.calibrating = True
        try:
            loop = asyncio.get_running_loop()
            cal = await loop.run_in_executor(self._calibrator, self._calibrate_served, state, state.loads)
        finally:
            state.calibrating = False
        if cal is not None:
            state.calibration = cal
            if state.model is not None:
                state.model.calibration = cal
            self.stats.calibrations[(state.entry.name, kind)] += 1

    def _calibrate_served(self, state: ModelState, generation: int) -> Calibration | None:
        model = state.model
        if model is None or state.loads != generation:  # unloaded (or reloaded) while queued
            return None
        return self._calibrate_blocking(model, lambda: state.model is not model)

    def _calibrate_blocking(self, model: LoadedModel, unloaded: Callable[[], bool]) -> Calibration | None:
        return calibrate(
            model,
            seconds=self.settings.calibration_s,
            batch_size=self.settings.calibration_batch_size,
            should_stop=lambda: self._stopping or unloaded(),
        )

    async def _calibrate_all(self) -> None:
        """After the preloads: calibrate every available model not calibrated yet, one at a time, within the
        budget; a model not loaded is loaded privately for it and released again."""
        if self._preload_task is not None:
            await asyncio.wait([self._preload_task])
        for _ in range(BACKGROUND_PASSES):
            pending = [
                s for s in self._states.values() if s.calibration is None and s.status != "unavailable"
            ]
            if not pending or self._stopping:
                return
            for state in pending:
                await self._calibrate_one(state)
            if any(s.calibration is None and s.status != "unavailable" for s in self._states.values()):
                await asyncio.sleep(BACKGROUND_RETRY_S)
        log.info("background calibration gave up on models that did not fit the memory budget")

    async def _calibrate_one(self, state: ModelState) -> None:
        if self._stopping or state.calibration is not None or state.calibrating:
            return
        if state.is_loaded and state.model is not None:
            await self._calibrate_loaded(state, "background")
            return
        if state.status != "available":  # loading: its own calibration follows the load
            return
        need = state.load_estimate_bytes
        if self.loaded_bytes() + need > self.settings.memory_budget_bytes:
            return  # never evicts for calibration; tried again on the next pass
        name = state.entry.name
        self._reserved[name] = need
        state.calibrating = True
        loop = asyncio.get_running_loop()
        try:
            cal, measured, seconds = await loop.run_in_executor(
                self._calibrator, self._private_calibration, state.entry
            )
        except (ArtifactProblem, RuntimeUnavailable) as exc:
            self._mark_unavailable(state, str(exc))
            return
        except Exception:
            log.exception("background calibration of model %s failed", name)
            return
        finally:
            self._reserved.pop(name, None)
            state.calibrating = False
        self._record_memory(state, measured)
        if state.load_s is None:
            state.load_s = seconds
        if cal is not None and state.calibration is None:
            state.calibration = cal
            self.stats.calibrations[(name, "background")] += 1

    def _private_calibration(self, entry: ModelEntry) -> tuple[Calibration | None, LoadMemory | None, float]:
        """Load a session of its own, calibrate it, release it: the served state is left as it was."""
        started = time.perf_counter()
        model, measured = self._load_blocking(entry)
        seconds = time.perf_counter() - started
        try:
            return self._calibrate_blocking(model, lambda: False), measured, seconds
        finally:
            del model
            trim_heap()

    # ---- inference -----------------------------------------------------------------------------------

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float
    ) -> tuple[np.ndarray, InferTimings]:
        """Run N preprocessed samples (N x C x H x W) through the model's batcher; logits N x classes."""
        state = self.state(name)
        state.in_flight += 1  # also while waiting for a load: the model is then not evicted under us
        try:
            await self.ensure_loaded(name, deadline=deadline)
            self._touch(state)
            batcher = state.batcher
            if batcher is None:
                raise ModelUnavailable(f"Model {name} was unloaded; retry.", retry_after_s=1)
            out, timings = await batcher.submit(batch, deadline=deadline)
        finally:
            state.in_flight -= 1
            state.last_used = time.monotonic()
        return out, InferTimings(
            queue_ms=max(t.queue_ns for t in timings) / 1e6,
            inference_ms=max(t.compute_ns for t in timings) / 1e6,
            batch_sizes=tuple(t.batch_size for t in timings),
        )

    def require_ready(self) -> None:
        ok, reason = self.ready()
        if not ok:
            raise NotReady(reason)
