"""Per-model state: safe artifact resolution, checksum, lazy loading, preloading and the memory budget."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.batcher import BatchRecord, DynamicBatcher
from service.errors import ModelUnavailable, NotReady, Overloaded, UnknownModel
from service.registry import ModelEntry, Registry, load_registry, sha256_file
from service.runtime import Calibration, LoadedModel, RuntimeUnavailable, calibrate, load_model
from service.settings import Settings

log = logging.getLogger("convzoo.manager")

Status = Literal["available", "loading", "loaded", "unavailable"]


class ArtifactProblem(Exception):
    """An artifact that must not be loaded; the message is safe to show to clients."""


@dataclass(frozen=True)
class InferTimings:
    queue_ms: float  # the longest wait of the request's images
    inference_ms: float  # the longest batch the request's images ran in
    batch_sizes: tuple[int, ...]


@dataclass
class ModelState:
    entry: ModelEntry
    status: Status = "available"
    reason: str | None = None
    model: LoadedModel | None = None
    batcher: DynamicBatcher | None = None
    calibration: Calibration | None = None  # kept after eviction: it was measured here
    last_used: float = 0.0
    in_flight: int = 0
    loads: int = 0  # completed loads, evictions included
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def is_loaded(self) -> bool:
        return self.status == "loaded"

    @property
    def size_bytes(self) -> int:
        if self.entry.artifact.bytes is not None:
            return self.entry.artifact.bytes
        return int((self.entry.metrics.size_mb or 0.0) * 1_000_000)


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

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.models_dir = settings.models_dir
        self._states = {m.name: ModelState(entry=m) for m in registry.models}
        # Loading is blocking work (hashing, ORT session build, calibration): one thread, off the loop.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._preload_task: asyncio.Task[None] | None = None
        # Callables(BatchRecord) attached to every batcher created afterwards (metrics, statistics).
        self.batch_hooks: list[Callable[[BatchRecord], None]] = []
        for state in self._states.values():
            self._static_checks(state)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelManager:
        return cls(load_registry(settings.registry_path), settings)

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

    def start(self) -> None:
        """Preload in the background; readiness follows the default model."""
        names = self.preload_names()
        self._preload_task = asyncio.create_task(self._preload(names))

    async def _preload(self, names: list[str]) -> None:
        for name in names:
            try:
                await self.ensure_loaded(name)
            except Exception as exc:  # recorded on the model's state; the others still load
                log.warning("preload of %s failed: %s", name, exc)

    async def wait_preloaded(self) -> None:
        if self._preload_task is not None:
            await asyncio.shield(self._preload_task)

    async def stop(self) -> None:
        if self._preload_task is not None and not self._preload_task.done():
            self._preload_task.cancel()
        for state in self._states.values():
            self._unload(state)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> tuple[bool, str]:
        state = self._states[self.default]
        if state.status == "loaded":
            return True, f"default model {self.default} is loaded and warmed up"
        if state.status == "unavailable":
            return False, f"default model {self.default} is unavailable: {state.reason}"
        return False, f"default model {self.default} is {state.status}, not yet warmed up"

    # ---- lookups ---------------------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        return self.state(name).entry

    def state(self, name: str) -> ModelState:
        try:
            return self._states[name]
        except KeyError:
            raise UnknownModel(f"Unknown model {name!r}; GET /models lists the models.") from None

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

    async def ensure_loaded(self, name: str) -> ModelState:
        """The model's loaded state; the first caller loads it, concurrent callers wait for that load."""
        state = self.state(name)
        if state.status == "loaded":
            return state
        async with state.lock:
            if state.is_loaded:  # loaded by the caller that held the lock before us
                return state
            if state.status == "unavailable":
                raise ModelUnavailable(f"Model {name} is unavailable: {state.reason}.")
            self._make_room(state)
            state.status = "loading"
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self._loader, self._load_blocking, state.entry)
            except (ArtifactProblem, RuntimeUnavailable) as exc:
                self._mark_unavailable(state, str(exc))
                raise ModelUnavailable(f"Model {name} is unavailable: {state.reason}.") from None
            except Exception:
                log.exception("loading model %s failed", name)
                self._mark_unavailable(state, "ONNX Runtime could not load the artifact")
                raise ModelUnavailable(f"Model {name} is unavailable: {state.reason}.") from None
            self._install(state, model)
            return state

    def _load_blocking(self, entry: ModelEntry) -> LoadedModel:
        path = resolve_artifact(self.models_dir, entry.artifact.path)
        if sha256_file(path) != entry.artifact.sha256:
            raise ArtifactProblem("the artifact's sha256 does not match the registry")
        started = time.perf_counter()
        model = load_model(path, entry, self.settings, max_batch_size=self.max_batch_size_of(entry))
        model.calibration = calibrate(model, seconds=self.settings.calibration_s)
        log.info("model %s loaded in %.2f s on %s", entry.name, time.perf_counter() - started, model.providers[0])
        return model

    def max_batch_size_of(self, entry: ModelEntry) -> int:
        return entry.batching.max_batch_size if entry.batching else self.settings.max_batch_size

    def _install(self, state: ModelState, model: LoadedModel) -> None:
        entry = state.entry
        delay = entry.batching.max_queue_delay_us if entry.batching else self.settings.max_queue_delay_us
        state.batcher = DynamicBatcher(
            entry.name,
            model.run,
            max_batch_size=model.max_batch_size,
            max_queue_delay_us=delay,
            max_queue_size=self.settings.max_queue_size,
            threads=self.settings.inference_threads,
            when_idle=self.settings.batch_when_idle,
        )
        for hook in self.batch_hooks:
            state.batcher.hooks.append(hook)
        state.model, state.calibration = model, model.calibration
        state.loads += 1
        state.status, state.reason = "loaded", None
        state.last_used = time.monotonic()

    def _unload(self, state: ModelState) -> None:
        if state.batcher is not None:
            state.batcher.stop()
        state.batcher, state.model = None, None
        if state.status == "loaded":
            state.status = "available"

    # ---- memory budget -------------------------------------------------------------------------------

    def loaded_bytes(self) -> int:
        return sum(s.size_bytes for s in self._states.values() if s.status in ("loaded", "loading"))

    def _make_room(self, incoming: ModelState) -> None:
        """Evict least recently used idle models until `incoming` fits the budget."""
        budget = self.settings.memory_budget_bytes
        while self.loaded_bytes() + incoming.size_bytes > budget:
            candidates = [
                s
                for s in self._states.values()
                if s.status == "loaded"
                and s is not incoming
                and s.entry.name != self.default
                and s.in_flight == 0
                and (s.batcher is None or s.batcher.idle)
            ]
            if not candidates:
                raise Overloaded(
                    f"No memory to load model {incoming.entry.name} while other models are busy; retry.",
                    retry_after_s=2,
                )
            victim = min(candidates, key=lambda s: s.last_used)
            log.info("evicting model %s (least recently used) to load %s", victim.entry.name, incoming.entry.name)
            self._unload(victim)

    # ---- inference -----------------------------------------------------------------------------------

    async def infer(self, name: str, batch: np.ndarray, *, deadline: float) -> tuple[np.ndarray, InferTimings]:
        """Run N preprocessed samples (N x C x H x W) through the model's batcher; logits N x classes."""
        state = await self.ensure_loaded(name)
        state.in_flight += 1
        state.last_used = time.monotonic()
        try:
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

    # ---- descriptions --------------------------------------------------------------------------------

    def summary(self, name: str) -> dict[str, Any]:
        state = self.state(name)
        e, m = state.entry, state.entry.metrics
        cal = state.calibration
        return {
            "name": e.name,
            "version": e.version,
            "dataset": e.dataset,
            "architecture": e.architecture,
            "num_classes": e.num_classes,
            "input_shape": list(e.input.shape),
            "params": m.params,
            "depth": m.depth,
            "gflops": m.gflops,
            "size_mb": m.size_mb,
            "top1": m.top1,
            "top5": m.top5,
            "accuracy_source": m.accuracy_source,
            "weights": e.weights.kind,
            # The contract's three states: a model being loaded is still `available`, with a reason.
            "status": "available" if state.status == "loading" else state.status,
            "status_reason": "loading" if state.status == "loading" else state.reason,
            "latency_ms": round(cal.p50_ms, 5) if cal else None,
            "throughput_ips": round(cal.throughput_ips, 1) if cal else None,
        }

    def summaries(self) -> list[dict[str, Any]]:
        return [self.summary(name) for name in self._states]

    def detail(self, name: str) -> dict[str, Any]:
        state = self.state(name)
        e = state.entry
        cal = state.calibration
        out = self.summary(name)
        out.update(
            {
                "paper": e.paper,
                "input": e.input.model_dump(mode="json"),
                "preprocessing": e.preprocessing.model_dump(mode="json"),
                "labels_count": len(self.registry.labels_of(name)),
                "artifact": e.artifact.model_dump(mode="json"),
                "weights_source": e.weights.source,
                "accuracy": {
                    "split": e.metrics.accuracy_split,
                    "samples": e.metrics.accuracy_samples,
                    "date": e.metrics.accuracy_date.isoformat() if e.metrics.accuracy_date else None,
                },
                "parity": e.parity.model_dump(mode="json") if e.parity else None,
                # a quantized variant: its FP32 source, calibration and what `parity` compares
                "quantization": e.quantization.model_dump(mode="json") if e.quantization else None,
                "provenance": e.provenance.model_dump(mode="json") if e.provenance else None,
                "registry_latency": e.latency.model_dump(mode="json") if e.latency else None,
                "calibration": (
                    {
                        "p50_ms": cal.p50_ms,
                        "p99_ms": cal.p99_ms,
                        "throughput_ips": cal.throughput_ips,
                        "batch_size": cal.batch_size,
                        "samples": cal.samples,
                        "provider": cal.provider,
                    }
                    if cal
                    else None
                ),
                "providers": state.model.providers if state.model else None,
                "batching": {
                    "max_batch_size": state.model.max_batch_size if state.model else self.max_batch_size_of(e),
                    "max_queue_delay_us": (
                        e.batching.max_queue_delay_us if e.batching else self.settings.max_queue_delay_us
                    ),
                    "max_queue_size": self.settings.max_queue_size,
                },
            }
        )
        return out
