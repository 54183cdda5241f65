"""Loading a model off the event loop: checked artifact, measured session build and warm-up on the loader
threads (loads of different models in parallel), and a request's wait for a load within its deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from service.compute.runtime import LoadedModel, load_model
from service.core.artifacts import checked_artifact
from service.core.errors import DeadlineExceeded, ServiceError
from service.core.registry import ModelEntry
from service.core.settings import Settings
from service.models.footprint import LoadMemory, LoadMeter
from service.models.state import ModelState

log = logging.getLogger("convzoo.manager")


class Loader:
    """Hashing, the ORT session build and the warm-up are blocking: they run on their own threads, up to
    `load_threads` at once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._threads = ThreadPoolExecutor(
            max_workers=settings.load_threads, thread_name_prefix="model-loader"
        )
        self.meter = LoadMeter()  # shared with the activations' measurement: one peak RSS

    def load_blocking(self, entry: ModelEntry, max_batch_size: int) -> tuple[LoadedModel, LoadMemory | None]:
        """Check, load and warm up the artifact here, measuring the RSS it took (None: overlapped a load)."""
        path = checked_artifact(entry, self._settings.models_dir)
        started = time.perf_counter()
        model, growth = self.meter.run(
            lambda: load_model(path, entry, self._settings, max_batch_size=max_batch_size)
        )
        measured = None if growth is None else growth.at_least(entry.artifact.bytes or 0)
        if measured is not None and self._settings.batch_memory:  # one image's activations, until calibration
            one = np.zeros((1, *model.sample_shape), dtype=np.float32)
            measured = replace(measured, first_image=self.meter.probe(lambda: model.run(one)))
        log.info(
            "model %s loaded in %.2f s on %s, %s",
            entry.name,
            time.perf_counter() - started,
            model.providers[0],
            f"{measured.steady / 1e6:.1f} MB measured"
            + (f", {measured.peak / 1e6:.1f} MB at its peak" if measured.peak else "")
            + (f", {measured.first_image / 1e6:.1f} MB for one image" if measured.first_image else "")
            if measured is not None
            else "memory not measured (parallel load)",
        )
        return model, measured

    async def load(
        self, entry: ModelEntry, max_batch_size: int, *, first: Callable[[], object] = lambda: None
    ) -> tuple[LoadedModel, LoadMemory | None, float]:
        """`load_blocking` on a loader thread, after `first` there (blocking: room for the load's peak); also
        the seconds it took, waiting for a thread included."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()

        def work() -> tuple[LoadedModel, LoadMemory | None]:
            first()
            return self.load_blocking(entry, max_batch_size)

        model, measured = await loop.run_in_executor(self._threads, work)
        return model, measured, time.perf_counter() - started

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def expected_load_remaining_s(state: ModelState) -> float | None:
    """Seconds until the model is loaded, from its last measured load; None if never measured."""
    if state.load_s is None:
        return None
    elapsed = 0.0
    if state.status == "loading" and state.load_started is not None:
        elapsed = time.monotonic() - state.load_started
    return max(state.load_s - elapsed, 0.0)


async def wait_for_load(
    state: ModelState, task: asyncio.Task[ServiceError | None], deadline: float | None
) -> ServiceError | None:
    """The load's outcome, waited for only while the `deadline` (time.monotonic()) allows: DeadlineExceeded at
    once when the load is expected to take longer, with the expected time as Retry-After. The load itself
    goes on (shielded), so that the retry finds the model loaded."""
    if deadline is None:
        return await asyncio.shield(task)
    name = state.entry.name
    remaining = deadline - time.monotonic()
    expected = expected_load_remaining_s(state)
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
        left = expected_load_remaining_s(state)
        raise DeadlineExceeded(
            f"The request's deadline passed while model {name} was loading; retry.",
            retry_after_s=max(left or 1.0, 1.0),
        ) from None
