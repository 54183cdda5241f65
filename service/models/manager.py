"""The model manager: the registry and every model's state, composed from service/models/ (artifact checks,
loading, the budget's eviction policy, calibration, readiness); lookups, loads shared by concurrent
requests, preloading, in-flight counts and inference (docs/model-lifecycle.md)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import numpy as np

from service.compute import threads
from service.compute.memory import bound_heap, rss_bytes, trim_heap
from service.compute.runtime import (
    CPU,
    LoadedModel,
    RuntimeUnavailable,
    initialise_runtime,
    requested_providers,
)
from service.core.artifacts import ArtifactProblem, missing, static_problem
from service.core.catalog import closest
from service.core.errors import (
    ModelUnavailable,
    NotReady,
    Overloaded,
    ServiceError,
    UnknownModel,
    unknown_model,
)
from service.core.registry import ModelEntry, Registry, RegistryError, Serving, full_decoding, load_registry
from service.core.settings import Settings
from service.models import budget
from service.models.batch_memory import BatchMemory, Grant
from service.models.batcher import BatchRecord, DynamicBatcher, InferTimings
from service.models.budget import EvictionReason, GreedyDual, Memory, Resident
from service.models.calibrator import Calibrator
from service.models.footprint import LoadMemory
from service.models.loader import Loader, expected_load_remaining_s, wait_for_load
from service.models.readiness import readiness
from service.models.state import BatchingPolicy, LifecycleStats, ModelState, Named, Status
from service.rollouts import versions
from service.rollouts.rollout import Rollouts

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
        # Every version of every model, by key (service/rollouts/versions.py): NAME for an entry's own version.
        self._states: dict[str, ModelState] = {}
        self._entries = {m.name: m for m in registry.models}
        # The policy traffic follows now: a registry's policy once its versions have loaded (`reload`).
        self._serving: dict[str, Serving] = {m.name: m.policy for m in registry.models}
        self._requested = dict(self._serving)  # the registry's policies as last rolled out
        self._named: dict[str, ModelState] = {}  # states under the names requests use, while policies hold
        self.rollouts = Rollouts()
        self.rollout_errors: dict[str, dict[str, str]] = {}  # model -> version -> why it does not serve
        self.generation = 0  # counts the registries taken in: a front re-reads the registry when it moves
        self._reload_lock = asyncio.Lock()
        self.stats = LifecycleStats()
        self._loader = Loader(settings)
        # The running batches' activations, beside the models as `_memory()` last counted them.
        self.batch_memory = BatchMemory(settings.memory_budget_bytes, enabled=settings.batch_memory)
        self._models_bytes = 0
        self._calibrator = Calibrator(
            settings,
            self.stats,
            self._load_blocking,
            self._fits,
            meter=self._loader.meter,
            batches=self.batch_memory,
        )
        self.batch_memory.others = lambda: self._models_bytes + self._calibrator.reserved_bytes
        self._priorities = GreedyDual()
        self._loads: dict[str, asyncio.Task[ServiceError | None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._preload_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.baseline_rss_bytes = 0  # the process before any model: the budget bounds RSS above it
        # Called with every batch any model's batcher runs (metrics, statistics, live latencies).
        self.batch_hooks = tuple(batch_hooks)
        for key, entry in versions.entries(registry).items():
            self._states[key] = self._new_state(entry)

    def _new_state(self, entry: ModelEntry) -> ModelState:
        state = ModelState(entry=entry, policy=BatchingPolicy.of(entry, self.settings))
        if (what := missing(entry, self.settings.models_dir)) is not None:
            state.mark_not_built(what)
        elif (reason := static_problem(entry, self.settings)) is not None:
            state.mark_unavailable(reason)
        return state

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

    async def learn(self, name: str) -> None:
        """The registry is this process's own: a name unknown here is unknown."""

    def preload_names(self) -> list[str]:
        names = self.settings.preload if self.settings.preload is not None else [self.default]
        unknown = [n for n in names if n not in self._serving]
        if unknown:
            guess = closest(unknown[0], self._serving)
            raise ValueError(f"Unknown model {unknown[0]}" + (f"; did you mean {guess}?" if guess else ""))
        return names

    def required_names(self) -> list[str]:
        """The models readiness waits for and eviction never touches: the default and the preloads."""
        names = self.preload_names()
        return names if self.default in names else [self.default, *names]

    def _required_keys(self) -> list[str]:
        """The versions the required models serve now: stable, canary and shadow."""
        return [k for n in self.required_names() for k in self._policy_keys(n)]

    def _policy_keys(self, model: str) -> list[str]:
        policy = self._serving[model]
        chosen = [policy.stable, *(s.version for s in (policy.canary, policy.shadow) if s is not None)]
        return [self._key_for(model, v) for v in chosen]

    def start(self) -> None:
        """Load the default and the preloads in the background, then calibrate every other model."""
        bound_heap()
        initialise_runtime(self.settings)
        trim_heap()
        self.baseline_rss_bytes = self.batch_memory.baseline = rss_bytes()
        loop = asyncio.get_running_loop()

        def short(need: int) -> None:  # from a batcher thread
            with contextlib.suppress(RuntimeError):  # the loop closed: the service is stopping
                loop.call_soon_threadsafe(self._evict_for_batch, need)

        self.batch_memory.short = short
        self._preload_task = asyncio.create_task(self._preload(self.required_names()))
        if self.settings.background_calibration and self.settings.calibration_s > 0:
            self._spawn(self._calibrate_all())

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _preload(self, names: list[str]) -> None:
        """Load in parallel (the versions each policy serves); readiness follows the loads, then their
        calibrations are awaited too."""
        keys = [k for n in names for k in self._policy_keys(n)]
        results = await asyncio.gather(*(self._ensure_key(k) for k in keys), return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):  # recorded on the model's state; the others still load
                log.warning("preload of %s failed: %s", key, result)
        for key in keys:
            state = self._states[key]
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
        self.batch_memory.close()
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
        ok, reason, lists = readiness([self.state(n) for n in self.required_names()], self.default)
        failed = [f"{m}@{v}: {why}" for m, errors in self.rollout_errors.items() for v, why in errors.items()]
        if failed:  # the versions that failed to roll out: their model still serves its current version
            lists = {**lists, "rollout_failed": failed}
        return ok, reason, lists

    def require_ready(self) -> None:
        ok, reason = self.ready()
        if not ok:
            raise NotReady(reason)

    # ---- lookups ---------------------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        return self.state(name).entry

    def state(self, name: str) -> ModelState:
        """The state of the version that `name` names (NAME: the stable one), under that name."""
        found = self._named.get(name)
        if found is not None:
            return found
        model, version = versions.split(name)
        policy = self._serving.get(model)
        if policy is None:
            raise unknown_model(name, self._serving)
        state = self._states[self._key_for(model, version or policy.stable)]
        if state.entry.name != name:  # NAME for another version, or NAME@VERSION of the entry's own version
            state = cast(ModelState, Named(state, name))
        self._named[name] = state
        return state

    def _key_for(self, model: str, version: str) -> str:
        """The key of a version of `model` the manager holds; UnknownModel for one it does not."""
        entry = self._entries.get(model)
        key = f"{model}{versions.SEPARATOR}{version}" if entry is None or version != entry.version else model
        if key not in self._states:
            if entry is None:
                raise unknown_model(model, self._serving)
            raise UnknownModel(
                f"Model {model!r} has no version {version!r}; its versions: {', '.join(entry.version_names)}.",
                extensions={"versions": entry.version_names},
            )
        return key

    def labels(self, name: str) -> list[str]:
        return self.registry.label_sets[self.entry(name).labels]

    def states(self) -> list[ModelState]:
        """One state per model: the version `model=NAME` gets, under NAME."""
        return [self.state(m.name) for m in self.registry.models]

    def version_states(self, model: str) -> list[ModelState]:
        """Every version of `model`, each under NAME@VERSION."""
        entry = self._entries.get(model)
        if entry is None:
            raise unknown_model(model, self._serving)
        return [self.state(versions.joined(model, v)) for v in entry.version_names]

    def max_batch_size_of(self, entry: ModelEntry) -> int:
        return self.state(entry.name).policy.max_batch_size

    # ---- loading -------------------------------------------------------------------------------------

    async def ensure_loaded(self, name: str, *, deadline: float | None = None) -> ModelState:
        """The model's loaded state; the first caller starts the load, concurrent callers share it.

        With a `deadline` (time.monotonic()), a caller waits for the load only while the deadline allows:
        when the load is expected to take longer, DeadlineExceeded at once, with the expected time as
        Retry-After. The load itself goes on, so that the retry finds the model loaded."""
        return await self._ensure_key(self._resolve(name), deadline=deadline)

    def _resolve(self, name: str) -> str:
        """The key of the version `name` names: pinned, or the stable one."""
        model, version = versions.split(name)
        policy = self._serving.get(model)
        if policy is None:
            raise unknown_model(name, self._serving)
        return self._key_for(model, version or policy.stable)

    async def _ensure_key(self, key: str, *, deadline: float | None = None) -> ModelState:
        state, name = self._states[key], key
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
        task.add_done_callback(lambda _: self._memory())  # a failed load no longer counts for the batches
        self._memory()
        return task

    async def _load(self, state: ModelState) -> ServiceError | None:
        """One load on the loader threads; the outcome is recorded on the state, also when nobody waits."""
        name = state.entry.name
        try:
            model, measured, seconds = await self._loader.load(
                state.entry,
                state.policy.max_batch_size,
                first=lambda: self.batch_memory.drain(loading=lambda: self._loader.meter.loading),
            )
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
            and name not in self._required_keys()
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
            admit=lambda images, deadline: self._admit(state, images, deadline),
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
        key = self._resolve(name)
        if not self._memory().evictable(key):
            return False
        self._evict(self._states[key], "manual")
        return True

    async def unload_model(self, name: str) -> bool:
        """`unload` for the Models interface (Triton's repository extension, with an admin key)."""
        return self.unload(name)

    # ---- memory budget -------------------------------------------------------------------------------

    def _admit(self, state: ModelState, images: int, deadline: float) -> Grant | None:
        """On a batcher thread: how many of a batch's images its activations let run now."""
        return self.batch_memory.admit(state.entry.name, state.activation_figures, images, deadline)

    def _memory(self) -> Memory:
        """What the budget policy sees: the loaded and loading models, background calibration's sessions and
        the running batches; the models' part is handed to the batches, which run beside it."""
        pinned = set(self._required_keys())
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
        memory = Memory(
            self.settings.memory_budget_bytes,
            residents,
            self._calibrator.reserved_bytes,
            self.batch_memory.reserved_bytes,
        )
        self._models_bytes = memory.models_bytes
        return memory

    def loaded_bytes(self) -> int:
        """The memory the budget counts: loaded models, loading ones at their load peak, and background
        calibration's sessions (the running batches' activations come on top: `batch_memory`)."""
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
        self._memory()
        self.batch_memory.changed()

    def _batch_headroom(self, memory: Memory, incoming: ModelState) -> int:
        """What a load leaves beside it, where idle models allow: room for the batches running now and one
        image of the model loaded for a request (with models packed to the budget, every batch would wait for
        one to end), and for the memory the process holds that the figures miss."""
        if not self.batch_memory.enabled:
            return 0
        # the RSS above the baseline that no figure accounts for (loads measured low or not at all)
        untracked = self.process_bytes() - memory.batches_bytes - memory.accounted
        return memory.batches_bytes + incoming.activation_figures.bytes_for(1) + max(untracked, 0)

    def _evict_for_batch(self, need: int) -> None:
        """A batch waits for `need` bytes of activations (one image's): evict idle models of lowest priority
        until they fit beside what the budget counts (running batches included) or, when more, the
        process's RSS above its baseline."""
        memory = self._memory()
        over = max(memory.with_batches, self.process_bytes()) + need - memory.budget
        for victim in memory.victims():
            if over <= 0 or self._stopping:
                return
            self._evict(self._states[victim.name], "batches")
            over -= victim.steady_bytes

    def _make_room(self, incoming: ModelState) -> None:
        """Evict the idle models of lowest priority until `incoming` fits the budget."""
        name = incoming.entry.name
        memory = self._memory()
        decision = budget.room_for(
            memory,
            name,
            load_bytes=incoming.load_estimate_bytes,
            measured=incoming.memory_bytes,
            headroom=self._batch_headroom(memory, incoming),
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

    def route(self, name: str, bucket: int | None = None) -> tuple[str, str | None]:
        """The key of the version that answers a request for `name`, and the model's name when the request
        follows the policy (None when pinned). `bucket`: the client's (service/rollouts/versions.py), else the one
        of the request in progress."""
        model, version = versions.split(name)
        policy = self._serving.get(model)
        if policy is None:
            raise unknown_model(name, self._serving)
        if version is not None:
            return self._key_for(model, version), None
        if policy.canary is not None:
            version = versions.choose(
                policy, versions.bucket(versions.client_id.get()) if bucket is None else bucket
            )
        return self._key_for(model, version or policy.stable), model

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float, bucket: int | None = None
    ) -> tuple[np.ndarray, InferTimings]:
        """Run N preprocessed samples (N x C x H x W) through the batcher of the version that answers
        `name`; logits N x classes, and the timings name that version."""
        key, followed = self.route(name, bucket)
        return await self.run(key, batch, deadline=deadline, followed=followed)

    async def run(
        self, key: str, batch: np.ndarray, *, deadline: float, followed: str | None = None
    ) -> tuple[np.ndarray, InferTimings]:
        """Inference on one version (by key). `followed`: the model whose policy chose it, so that its
        shadow gets a copy."""
        state = self._states.get(key)
        if state is None:  # retired between the request's routing and now
            raise ModelUnavailable(f"Model {key} was unloaded; retry.", retry_after_s=1)
        state.in_flight += 1  # also while waiting for a load: the model is then not evicted under us
        try:
            await self._ensure_key(key, deadline=deadline)
            self._touch(state)
            batcher = state.batcher
            if batcher is None:
                raise ModelUnavailable(f"Model {key} was unloaded; retry.", retry_after_s=1)
            out, timings = await batcher.submit(batch, deadline=deadline)
        finally:
            state.in_flight -= 1
            state.last_used = time.monotonic()
        measured = InferTimings(
            queue_ms=max(t.queue_ns for t in timings) / 1e6,
            inference_ms=max(t.compute_ns for t in timings) / 1e6,
            batch_sizes=tuple(t.batch_size for t in timings),
            version=state.entry.version,
        )
        model = versions.split(key)[0]
        if followed is None:
            self.rollouts.pinned[(model, state.entry.version)] += 1
        else:
            self.rollouts.served[(model, state.entry.version)] += 1
            self._copy_to_shadow(model, state, batch, out, measured)
        return out, measured

    # ---- shadow --------------------------------------------------------------------------------------

    def _copy_to_shadow(
        self, model: str, answered: ModelState, batch: np.ndarray, logits: np.ndarray, timings: InferTimings
    ) -> None:
        """Its share of the requests, copied to the model's shadow version once the answer has gone. Shed
        first under load (counted): while the version that answered has requests queued or a batch running
        (a copy would take CPU they need: with a 100% shadow on efficientnet_lite0 at c8 on 2 cores,
        copying whenever its queue was empty still raised the primary's p99 1.9x), while the shadow has a
        batch's worth of copies, or while it is not loaded."""
        primary = answered.entry.version
        share = self._serving[model].shadow
        if share is None or share.version == primary or self._stopping:
            return
        if random.random() * 100 >= share.percent:
            return
        state = self._states.get(self._key_for(model, share.version))
        busy = answered.batcher is not None and not answered.batcher.idle
        if busy or state is None or state.batcher is None or state.in_flight >= state.policy.max_batch_size:
            self.rollouts.shed[(model, share.version)] += 1
            return
        state.in_flight += 1
        primary_ms = timings.queue_ms + timings.inference_ms
        self._spawn(self._shadow(state, model, primary, batch, logits, primary_ms))

    async def _shadow(
        self,
        state: ModelState,
        model: str,
        primary: str,
        batch: np.ndarray,
        logits: np.ndarray,
        primary_ms: float,
    ) -> None:
        shadow = state.entry.version
        try:
            await asyncio.sleep(0)  # the primary's answer is written first
            batcher = state.batcher
            if batcher is None:
                self.rollouts.shed[(model, shadow)] += 1
                return
            deadline = time.monotonic() + self.settings.request_timeout_s
            out, timings = await batcher.submit(batch, deadline=deadline)
        except Exception as exc:  # never the client's concern: counted, and logged at debug
            self.rollouts.failed[(model, shadow)] += 1
            log.debug("shadow inference of %s@%s failed: %s", model, shadow, exc)
            return
        finally:
            state.in_flight -= 1
        shadow_ms = (max(t.queue_ns for t in timings) + max(t.compute_ns for t in timings)) / 1e6
        self.rollouts.pair(model, primary, shadow).record(logits, out, primary_ms, shadow_ms)

    # ---- reload ----------------------------------------------------------------------------------------

    def install_reload_signal(self, also: Callable[[], None] | None = None) -> None:
        """SIGHUP re-reads the registry and applies it (`reload`), after `also` (the API keys' reload,
        which this handler replaces in this process); a no-op where signals cannot be set."""

        def handle() -> None:
            if also is not None:
                also()
            self.reload_soon()

        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handle)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            log.debug("SIGHUP cannot be handled in this process; reload is its call only")

    def reload_soon(self) -> None:
        log.info("reloading the registry (SIGHUP)")
        self._spawn(self.reload())

    def _read_registry(self) -> Registry:
        registry = load_registry(self.settings.registry_path)
        return registry if self.settings.reduce_at_decode else full_decoding(registry)

    async def reload(self, registry: Registry | None = None) -> dict[str, Any]:
        """Re-read the registry (or take `registry`) and apply the difference: new versions load and warm
        while the current ones serve; a model's traffic moves to its new policy once the versions it names
        are loaded; a version that fails leaves the current one serving, and says why (`rollout_errors`,
        readiness, metrics, the log). Versions no longer served are unloaded after their last request.
        Reloads run one at a time, and a version's load is shared by whoever waits for it."""
        async with self._reload_lock:
            try:
                if registry is None:  # parsed and validated off the event loop: inference frames go on
                    registry = await asyncio.to_thread(self._read_registry)
                served = {m: self._policy_keys(m) for m in self._serving}  # keys as the old registry has them
                fresh = self._take_registry(registry)
            except RegistryError as exc:
                log.error("reload refused, the registry in use stays: %s", exc)
                return {"ok": False, "error": str(exc)}
            # A policy rolls out when it changed, or when a version it names changed in the registry (a
            # version that failed is tried again then, not at every reload).
            changed = [
                m
                for m in self.registry.models
                if m.policy != self._requested.get(m.name)
                or fresh.intersection(versions.key(m, v) for v in m.version_names)
            ]
            await asyncio.gather(*(self._roll(m) for m in changed))
            for model in [m for m in self._serving if m not in self._entries]:  # removed from the registry
                del self._serving[model]
                self._named.clear()
                for key in served[model]:
                    self._spawn(self._retire(key))
            self._retire_unlisted()
            return {
                "ok": True,
                "serving": {
                    m: p.model_dump(mode="json")
                    for m, p in self._serving.items()
                    if m in [c.name for c in changed]
                },
                "errors": {m: dict(e) for m, e in self.rollout_errors.items() if e},
            }

    def _take_registry(self, registry: Registry) -> set[str]:
        """A new registry's entries and versions (none loaded yet); the policies stay as they are. Returns
        the keys of the versions that are new or changed."""
        for m in registry.models:
            old = self._entries.get(m.name)
            if old is not None and old.version != m.version:
                raise RegistryError(
                    f"model {m.name!r}: its entry's own version changed from {old.version!r} to {m.version!r}; "
                    "a new version goes under `versions` (docs/rollouts.md)"
                )
        fresh: set[str] = set()
        for key, entry in versions.entries(registry).items():
            state = self._states.get(key)
            if state is None or (
                state.status == "unavailable" and state.in_flight == 0 and state.entry != entry
            ):
                self._states[key] = self._new_state(entry)  # new, or failed before and changed since
                fresh.add(key)
            elif state.entry.artifact != entry.artifact:
                if state.status in ("loaded", "loading") or state.in_flight:
                    why = "its artifact changed in the registry while it runs: a new version needs a new name"
                    log.warning("model %s: %s; the running one stays", key, why)
                    model, version = versions.split(key)
                    self.rollout_errors.setdefault(model, {})[version or entry.version] = why
                else:
                    self._states[key] = self._new_state(entry)
                    fresh.add(key)
            else:
                state.entry = entry  # figures and provenance may have been measured since
        self.registry = registry
        self._entries = {m.name: m for m in registry.models}
        for m in registry.models:
            if m.name not in self._serving:  # a new model serves its policy from the start, loaded lazily
                self._serving[m.name] = self._requested[m.name] = m.policy
        self._named.clear()
        self.generation += 1
        return fresh

    async def _roll(self, entry: ModelEntry) -> None:
        """Load the versions `entry`'s policy names, then move its traffic to them (those that loaded)."""
        model, want, current = entry.name, entry.policy, self._serving[entry.name]
        self._requested[model] = want
        targets = [want.stable, *(s.version for s in (want.canary, want.shadow) if s is not None)]
        outcomes = await asyncio.gather(
            *(self._ensure_key(self._key_for(model, v)) for v in targets), return_exceptions=True
        )
        errors = {
            v: str(getattr(r, "detail", r))
            for v, r in zip(targets, outcomes, strict=True)
            if isinstance(r, BaseException)
        }
        stable = want.stable if want.stable not in errors else current.stable
        canary = (
            want.canary
            if want.canary and want.canary.version not in errors and want.canary.version != stable
            else None
        )
        shadow = (
            want.shadow
            if want.shadow and want.shadow.version not in errors and want.shadow.version != stable
            else None
        )
        old_keys = set(self._policy_keys(model))
        self._serving[model] = Serving(stable=stable, canary=canary, shadow=shadow)
        self._named.clear()
        self.rollout_errors[model] = errors
        for version, why in errors.items():
            log.warning(
                "model %s: version %s failed to roll out, %s keeps serving: %s", model, version, stable, why
            )
        log.info(
            "model %s serves %s%s%s",
            model,
            stable,
            f", canary {canary.version} at {canary.percent:g}%" if canary else "",
            f", shadow {shadow.version} at {shadow.percent:g}%" if shadow else "",
        )
        for key in old_keys - set(self._policy_keys(model)):
            self._spawn(self._retire(key))

    async def _retire(self, key: str) -> None:
        """Unload a version no policy serves any more, after its last request; forget it if the registry
        no longer has it."""
        state = self._states.get(key)
        if state is None:
            return
        # Requests in flight finish on the version they started on. Idleness changes on the batcher's
        # threads too, so it is polled: every 10 ms, for as long as the last requests take.
        while not state.idle:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        model, _ = versions.split(key)
        if model in self._serving and model in self._entries and key in self._policy_keys(model):
            return  # serving again (a roll back meanwhile)
        if state.is_loaded:
            self._evict(state, "retired")
        self._retire_unlisted()

    def _retire_unlisted(self) -> None:
        listed = set(versions.entries(self.registry))
        serving = {k for m in self._serving for k in self._policy_keys(m)}
        for key, state in list(self._states.items()):
            if key not in listed and key not in serving and state.idle and not state.is_loaded:
                del self._states[key]

    def serving_policies(self) -> dict[str, Serving]:
        """Every model's policy as traffic follows it now."""
        return dict(self._serving)

    def rollout_state(self, model: str) -> tuple[Serving, dict[str, str]]:
        """The policy `model`'s traffic follows now, and the versions that failed to roll out, with why."""
        if model not in self._serving:
            raise unknown_model(model, self._serving)
        return self._serving[model], dict(self.rollout_errors.get(model, {}))

    async def rollout(self, name: str) -> dict[str, Any]:
        """The figures that judge a rollout: requests per version, the shadow's comparisons."""
        model, _ = versions.split(name)
        if model not in self._serving:
            raise unknown_model(name, self._serving)
        return self.rollouts.of(model)
