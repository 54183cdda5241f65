"""Calibration off the request path: one thread measures one model at a time, a served model beside its
traffic after its load, and in the background every model not measured yet, each in a private session
within the memory budget (docs/model-lifecycle.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.compute.calibration import Calibration
from service.compute.memory import trim_heap
from service.compute.runtime import LoadedModel, RuntimeUnavailable, calibrate
from service.core.artifacts import ArtifactProblem
from service.core.settings import Settings
from service.models.batch_memory import BatchMemory
from service.models.budget import Activations
from service.models.footprint import LoadMemory, LoadMeter, measure_activations
from service.models.state import LifecycleStats, ModelState

log = logging.getLogger("convzoo.manager")

BACKGROUND_RETRY_S = 2.0  # a model that did not fit the budget is tried again after this
BACKGROUND_PASSES = 30

Load = Callable[[ModelState], tuple[LoadedModel, LoadMemory | None]]  # blocking, on the calling thread


class Calibrator:
    """`load` builds a private session (blocking); `fits` says whether that many more bytes fit the budget
    now. The sessions it holds are counted in `reserved_bytes`; the activations of its runs are held in
    `batches` like a batch's, and measured with `meter` (the loads' meter: one peak RSS for both)."""

    def __init__(
        self,
        settings: Settings,
        stats: LifecycleStats,
        load: Load,
        fits: Callable[[int], bool],
        *,
        meter: LoadMeter | None = None,
        batches: BatchMemory | None = None,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._load = load
        self._fits = fits
        self._meter = meter or LoadMeter()
        self._batches = batches or BatchMemory(settings.memory_budget_bytes, enabled=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration")
        self._reserved: dict[str, int] = {}
        self.stopping = False

    @property
    def reserved_bytes(self) -> int:
        return sum(list(self._reserved.values()))  # a copy first: batcher threads read it too

    def shutdown(self) -> None:
        self.stopping = True
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def calibrate_loaded(self, state: ModelState, kind: str) -> None:
        """Calibrate a served model on the calibration thread, beside its traffic (its activations too,
        when they were not measured yet). No reference to the session is held while waiting for the thread:
        an eviction meanwhile frees its memory at once."""
        measured = state.calibration is not None and state.activations is not None
        if state.calibrating or measured or not state.is_loaded:
            return
        state.calibrating = True
        try:
            loop = asyncio.get_running_loop()
            cal, activations = await loop.run_in_executor(
                self._thread, self._calibrate_served, state, state.loads
            )
        finally:
            state.calibrating = False
        state.activations = activations or state.activations
        if cal is not None and state.calibration is None:
            state.calibration = cal
            if state.model is not None:
                state.model.calibration = cal
            self._stats.calibrations[(state.entry.name, kind)] += 1

    def _calibrate_served(
        self, state: ModelState, generation: int
    ) -> tuple[Calibration | None, Activations | None]:
        model = state.model
        if model is None or state.loads != generation:  # unloaded (or reloaded) while queued
            return None, None
        return self._measure(state, model, lambda: state.model is not model)

    def _measure(
        self, state: ModelState, model: LoadedModel, unloaded: Callable[[], bool]
    ) -> tuple[Calibration | None, Activations | None]:
        """Latency and throughput (unless measured already), then the activations: within the memory
        budget, at a batch cut smaller where the budget leaves no room for the configured one."""
        size = min(self._settings.calibration_batch_size, model.max_batch_size)
        # No wait: a calibration waiting for room would hold the session, which an eviction could not free.
        grant = self._batches.admit(
            state.entry.name, state.activation_figures, size, time.monotonic(), urgent=False
        )
        if grant is None:  # no room now: a later pass (background calibration) tries again
            return None, None
        try:
            cal = state.calibration or calibrate(
                model,
                seconds=self._settings.calibration_s,
                batch_size=grant.images,
                should_stop=lambda: self.stopping or unloaded(),
            )
            if cal is None or self.stopping or unloaded():
                return None, None
            if not self._settings.batch_memory:  # the runs cost a second of CPU on resnet50: only when used
                return cal, None
            activations = measure_activations(
                lambda n: model.run(np.zeros((n, *model.sample_shape), dtype=np.float32)),
                self._meter,
                grant.images,
            )
            if activations is not None:
                log.info(
                    "model %s: activations %.1f MB + %.2f MB per image (measured at batch 1 and %d)",
                    state.entry.name,
                    activations.fixed / 1e6,
                    activations.per_image / 1e6,
                    grant.images,
                )
            return cal, activations
        finally:
            grant.release()

    async def calibrate_all(self, states: Sequence[ModelState]) -> None:
        """Calibrate every available model not calibrated yet, one at a time, within the budget; a model not
        loaded is loaded privately for it and released again."""
        for _ in range(BACKGROUND_PASSES):
            pending = [s for s in states if s.calibration is None and s.status != "unavailable"]
            if not pending or self.stopping:
                return
            for state in pending:
                await self._calibrate_one(state)
            if any(s.calibration is None and s.status != "unavailable" for s in states):
                await asyncio.sleep(BACKGROUND_RETRY_S)
        log.info("background calibration gave up on models that did not fit the memory budget")

    async def _calibrate_one(self, state: ModelState) -> None:
        if self.stopping or state.calibration is not None or state.calibrating:
            return
        if state.is_loaded and state.model is not None:
            await self.calibrate_loaded(state, "background")
            return
        if state.status != "available":  # loading: its own calibration follows the load
            return
        need = state.load_estimate_bytes
        if not self._fits(need):
            return  # never evicts for calibration; tried again on the next pass
        name = state.entry.name
        self._reserved[name] = need
        state.calibrating = True
        loop = asyncio.get_running_loop()
        try:
            cal, activations, measured, seconds = await loop.run_in_executor(
                self._thread, self._private_calibration, state
            )
        except (ArtifactProblem, RuntimeUnavailable) as exc:
            state.mark_failed(exc)
            return
        except Exception:
            log.exception("background calibration of model %s failed", name)
            return
        finally:
            self._reserved.pop(name, None)
            state.calibrating = False
        state.record_memory(measured)
        state.activations = activations or state.activations
        if state.load_s is None:
            state.load_s = seconds
        if cal is not None and state.calibration is None:
            state.calibration = cal
            self._stats.calibrations[(name, "background")] += 1

    def _private_calibration(
        self, state: ModelState
    ) -> tuple[Calibration | None, Activations | None, LoadMemory | None, float]:
        """Load a session of its own, calibrate it, release it: the served state is left as it was."""
        started = time.perf_counter()
        model, measured = self._load(state)
        seconds = time.perf_counter() - started
        try:
            return *self._measure(state, model, lambda: False), measured, seconds
        finally:
            del model
            trim_heap()
