"""Calibration off the request path: one thread measures one model at a time, a served model beside its
traffic after its load, and in the background every model not measured yet, each in a private session
within the memory budget (docs/model-lifecycle.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from service.compute.calibration import Calibration
from service.compute.memory import trim_heap
from service.compute.runtime import LoadedModel, RuntimeUnavailable, calibrate
from service.core.artifacts import ArtifactProblem
from service.core.settings import Settings
from service.models.footprint import LoadMemory
from service.models.state import LifecycleStats, ModelState

log = logging.getLogger("convzoo.manager")

BACKGROUND_RETRY_S = 2.0  # a model that did not fit the budget is tried again after this
BACKGROUND_PASSES = 30

Load = Callable[[ModelState], tuple[LoadedModel, LoadMemory | None]]  # blocking, on the calling thread


class Calibrator:
    """`load` builds a private session (blocking); `fits` says whether that many more bytes fit the budget
    now. The sessions it holds are counted in `reserved_bytes`."""

    def __init__(
        self, settings: Settings, stats: LifecycleStats, load: Load, fits: Callable[[int], bool]
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._load = load
        self._fits = fits
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration")
        self._reserved: dict[str, int] = {}
        self.stopping = False

    @property
    def reserved_bytes(self) -> int:
        return sum(self._reserved.values())

    def shutdown(self) -> None:
        self.stopping = True
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def calibrate_loaded(self, state: ModelState, kind: str) -> None:
        """Calibrate a served model on the calibration thread, beside its traffic. No reference to the
        session is held while waiting for the thread: an eviction meanwhile frees its memory at once."""
        if state.calibrating or state.calibration is not None or not state.is_loaded:
            return
        state.calibrating = True
        try:
            loop = asyncio.get_running_loop()
            cal = await loop.run_in_executor(self._thread, self._calibrate_served, state, state.loads)
        finally:
            state.calibrating = False
        if cal is not None:
            state.calibration = cal
            if state.model is not None:
                state.model.calibration = cal
            self._stats.calibrations[(state.entry.name, kind)] += 1

    def _calibrate_served(self, state: ModelState, generation: int) -> Calibration | None:
        model = state.model
        if model is None or state.loads != generation:  # unloaded (or reloaded) while queued
            return None
        return self._measure(model, lambda: state.model is not model)

    def _measure(self, model: LoadedModel, unloaded: Callable[[], bool]) -> Calibration | None:
        return calibrate(
            model,
            seconds=self._settings.calibration_s,
            batch_size=self._settings.calibration_batch_size,
            should_stop=lambda: self.stopping or unloaded(),
        )

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
            cal, measured, seconds = await loop.run_in_executor(
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
        if state.load_s is None:
            state.load_s = seconds
        if cal is not None and state.calibration is None:
            state.calibration = cal
            self._stats.calibrations[(name, "background")] += 1

    def _private_calibration(self, state: ModelState) -> tuple[Calibration | None, LoadMemory | None, float]:
        """Load a session of its own, calibrate it, release it: the served state is left as it was."""
        started = time.perf_counter()
        model, measured = self._load(state)
        seconds = time.perf_counter() - started
        try:
            return self._measure(model, lambda: False), measured, seconds
        finally:
            del model
            trim_heap()
