"""The model manager: the registry and every model's state, composed from service/models/ (artifact checks,
loading, the budget's eviction policy, calibration, readiness); lookups, loads shared by concurrent
requests, preloading, in-flight counts and inference (docs/model-lifecycle.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np

from service import threads
from service.batcher import BatchRecord, DynamicBatcher, InferTimings
from service.catalog import closest
from service.errors import ModelUnavailable, NotReady, Overloaded, ServiceError, unknown_model
from service.memory import bound_heap, rss_bytes, trim_heap
from service.models import budget
from service.models.artifacts import ArtifactProblem, missing, static_problem
from service.models.budget import EvictionReason, GreedyDual, Memory, Resident
from service.models.calibrator import Calibrator
from service.models.footprint import LoadMemory
from service.models.loader import Loader, expected_load_remaining_s, wait_for_load
from service.models.readiness import readiness
from service.models.state import BatchingPolicy, LifecycleStats, ModelState, Status
from service.registry import ModelEntry, Registry, full_decoding, load_registry
from service.runtime import CPU, LoadedModel, RuntimeUnavailable, initialise_runtime, requested_providers
from service.settings import Settings

__all__ = ["BatchingPolicy", "LifecycleStats", "ModelManager", "ModelState", "Status"]

log = logging.getLogger("convzoo.manager")


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
        self.stats = LifecycleStats()
        self._loader = Loader(settings)
        self._calibrator = Calibrator(settings, self.stats, self._load_blocking, self._fits)
        self._priorities = GreedyDual()
        self._loads: dict[str, asyncio.Task[ServiceError | None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._preload_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.baseline_rss_bytes = 0  # the process before any model: the budget bounds RSS above it
        # Called with every batch any model's batcher runs (metrics, statistics, live latencies).
        self.batch_hooks = tuple(batch_hooks)
        for state in self._states.values():
            if (what := missing(state.entry, settings.models_dir)) is not None:
                state.mark_not_built(what)
            elif (reason := static_problem(state.entry, settings)) is not None:
                state.mark_unavailable(reason)

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

    @property
    def provider(self) -> str:
        """The execution provider a model gets when it loads."""
        try:
            return requested_providers(self.settings.providers)[0]
        except RuntimeUnavailable:
            return CPU

    def host_description(self) -> dict[str, object]:
        return threads.host_description(self.settings, self.provider)

    async def refresh(self) -> None:
        """The states are this process's own: always current (a front's link fetches them)."""

    def preload_names(self) -> list[str]:
        names = self.settings.preload if self.settings.preload is not None else [self.default]
        unknown = [n for n in names if n not in self._states]
        if unknown:
            guess = closest(unknown[0], self._states)
            raise ValueError(f"Unknown model {unknown[0]}" + (f"; did you mean {guess}?" if guess else ""))
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
                await self._calibrator.calibrate_loaded(state, "after-load")

    async def _calibrate_all(self) -> None:
        """After the preloads: background calibration of every model not measured yet."""
        if self._preload_task is not None:
            await asyncio.wait([self._preload_task])
        await self._calibrator.calibrate_all(list(self._states.values()))

    async def wait_preloaded(self) -> None:
        """Until the default and the preloads are loaded and calibrated (or failed)."""
        if self._preload_task is not None:
            await asyncio.shield(self._preload_task)

    async def stop(self) -> None:
        self._stopping = self._calibrator.stopping = True
        for task in [self._preload_task, *self._background, *self._loads.values()]:
            if task is not None and not task.done():
                task.cancel()
        for state in self._states.values():
            state.unload()
        self._loader.shutdown()
        self._calibrator.shutdown()

    def ready(self) -> tuple[bool, str]:
        ok, reason, _ = self.readiness()
        return ok, reason

    def readiness(self) -> tuple[bool, str, dict[str, list[str]]]:
        """Ready when the default and every preloaded model are loaded and warmed up; says what is not."""
        return readiness([self._states[n] for n in self.required_names()], self.default)

    def require_ready(self) -> None:
        ok, reason = self.ready()
        if not ok:
            raise NotReady(reason)

    # ---- lookups ---------------------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        return self.state(name).entry

    def state(self, name: str) -> ModelState:
        try:
            return self._states[name]
        except KeyError:
            raise unknown_model(name, self._states) from None

    def labels(self, name: str) -> list[str]:
        return self.registry.labels_of(self.entry(name).name)

    def states(self) -> list[ModelState]:
        return list(self._states.values())

    def max_batch_size_of(self, entry: ModelEntry) -> int:
        return self.state(entry.name).policy.max_batch_size

    # ---- loading -------------------------------------------------------------------------------------

    async def ensure_loaded(self, name: str, *, deadline: float | None = None) -> ModelState:
        """The model's loaded state; the first caller starts the load, concurrent callers share it.

        With a `deadline` (time.monotonic()), a caller waits for the load only while the deadline allows:
        when the load is expected to take longer, DeadlineExceeded at once, with the expected time as
        Retry-After. The load itself goes on, so that the retry finds the model loaded."""
        state = self.state(name)
        if state.is_loaded:
            return state
        if state.status == "unavailable":
            raise state.unavailable()
        task = self._loads.get(name)
        if task is None:
            self._make_room(state)
            task = self._start_load(state)
        error = await wait_for_load(state, task, deadline)
        if error is not None:
            raise error
        if not state.is_loaded:  # evicted between its load and this caller's turn
            raise ModelUnavailable(f"Model {name} was unloaded; retry.", retry_after_s=1)
        return state

    def expected_load_remaining_s(self, state: ModelState) -> float | None:
        """Seconds until the model is loaded, from its last measured load; None if never measured."""
        return expected_load_remaining_s(state)

    def _start_load(self, state: ModelState) -> asyncio.Task[ServiceError | None]:
        name = state.entry.name
        state.status, state.load_started = "loading", time.monotonic()
        task = asyncio.create_task(self._load(state), name=f"load-{name}")
        self._loads[name] = task
        task.add_done_callback(lambda _: self._loads.pop(name, None))
        return task

    async def _load(self, state: ModelState) -> ServiceError | None:
        """One load on the loader threads; the outcome is recorded on the state, also when nobody waits."""
        name = state.entry.name
        try:
            model, measured, seconds = await self._loader.load(state.entry, state.policy.max_batch_size)
        except (ArtifactProblem, RuntimeUnavailable) as exc:
            return self._load_failed(state, exc)
        except Exception:
            log.exception("loading model %s failed", name)
            return self._load_failed(state, RuntimeError("ONNX Runtime could not load the artifact"))
        if self._stopping:
            return ModelUnavailable("The service is shutting down.", retry_after_s=1)
        self._install(state, model, seconds, measured)
        self._enforce_budget(keep=state)
        if (
            state.calibration is None
            and self.settings.calibration_s > 0
            and name not in self.required_names()
        ):
            self._spawn(self._calibrator.calibrate_loaded(state, "after-load"))
        return None

    def _load_blocking(self, state: ModelState) -> tuple[LoadedModel, LoadMemory | None]:
        return self._loader.load_blocking(state.entry, state.policy.max_batch_size)

    def _load_failed(self, state: ModelState, exc: Exception) -> ServiceError:
        self.stats.loads[(state.entry.name, "failed")] += 1
        state.mark_failed(exc)
        return state.unavailable()

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
        state.record_memory(measured)
        state.hits = 1
        state.priority = self._priorities.priority(state.hits, state.memory_estimate_bytes)
        self.stats.loads[(entry.name, "ok")] += 1
        self.stats.load_seconds[entry.name] = self.stats.load_seconds.get(entry.name, 0.0) + seconds

    def unload(self, name: str) -> bool:
        """Unload an idle, unpinned model now (operations and tests); False when it is in use or pinned."""
        state = self.state(name)
        if not self._memory().evictable(name):
            return False
        self._evict(state, "manual")
        return True

    async def unload_model(self, name: str) -> bool:
        """`unload` for the Models interface (Triton's repository extension, with an admin key)."""
        return self.unload(name)

    # ---- memory budget -------------------------------------------------------------------------------

    def _memory(self) -> Memory:
        """What the budget policy sees: the loaded and loading models, and background calibration's sessions."""
        pinned = set(self.required_names())
        residents = [
            Resident(
                name=s.entry.name,
                steady_bytes=s.memory_estimate_bytes,
                load_bytes=s.load_estimate_bytes,
                loading=s.status == "loading",
                pinned=s.entry.name in pinned,
                in_flight=s.in_flight,
                busy=s.batcher is not None and not s.batcher.idle,
                priority=s.priority,
            )
            for s in self._states.values()
            if s.status in ("loaded", "loading")
        ]
        return Memory(self.settings.memory_budget_bytes, residents, self._calibrator.reserved_bytes)

    def loaded_bytes(self) -> int:
        """The memory the budget counts: loaded models, loading ones at their load peak, and background
        calibration's sessions."""
        return self._memory().accounted

    def _fits(self, need: int) -> bool:
        return self._memory().fits(need)

    def process_bytes(self) -> int:
        """The process's RSS above its baseline before any model was loaded."""
        return max(rss_bytes() - self.baseline_rss_bytes, 0)

    def _touch(self, state: ModelState) -> None:
        state.hits += 1
        state.priority = self._priorities.priority(state.hits, state.memory_estimate_bytes)
        state.last_used = time.monotonic()

    def _evict(self, victim: ModelState, reason: EvictionReason) -> None:
        self._priorities.evicted(victim.priority)
        log.info(
            "evicting model %s (%s; priority %.4g, %d requests since loaded)",
            victim.entry.name,
            reason,
            victim.priority,
            victim.hits,
        )
        victim.unload()
        self.stats.evictions[(victim.entry.name, reason)] += 1
        trim_heap()

    def _make_room(self, incoming: ModelState) -> None:
        """Evict the idle models of lowest priority until `incoming` fits the budget."""
        name = incoming.entry.name
        decision = budget.room_for(
            self._memory(), name, load_bytes=incoming.load_estimate_bytes, measured=incoming.memory_bytes
        )
        if isinstance(decision, budget.TooLarge):
            incoming.mark_unavailable(
                f"the model needs {decision.measured / 1e6:.0f} MB (measured), more than the memory budget "
                f"leaves beside the default and preloaded models ({decision.room / 1e6:.0f} MB)",
            )
            raise incoming.unavailable()
        if isinstance(decision, budget.NoRoomNow):
            loading = [
                expected_load_remaining_s(s) or 1.0 for s in self._states.values() if s.status == "loading"
            ]
            raise Overloaded(
                f"No memory to load model {name} now: the loaded models are in use or pinned; retry.",
                retry_after_s=max([2.0, *loading]),
            )
        for victim in decision.victims:
            self._evict(self._states[victim], "budget")

    def _enforce_budget(self, keep: ModelState) -> None:
        """After a load, whose footprint is now measured: while the accounted memory or the process's RSS
        above its baseline exceeds the budget, evict idle models of lowest priority."""
        while True:
            rss = self.process_bytes() if self.baseline_rss_bytes > 0 else None
            decision = budget.next_eviction(self._memory(), keep.entry.name, rss)
            if decision is None:
                return
            if isinstance(decision, budget.Stuck):
                log.warning(
                    "over the memory budget (%.0f MB accounted, RSS %.0f MB above baseline, budget %.0f MB) "
                    "and the idle models would not make up for it: nothing evicted",
                    self.loaded_bytes() / 1e6,
                    self.process_bytes() / 1e6,
                    self.settings.memory_budget_bytes / 1e6,
                )
                return
            self._evict(self._states[decision.victim], decision.reason)

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
