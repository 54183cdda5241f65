"""Everything a request needs beyond itself, built once per app in its lifespan and handed to the routes
through the ASGI lifespan state (service.api.deps.ServicesDep)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from service import catalog, preprocess
from service.lifecycle_metrics import LifecycleCollector
from service.live_latency import RecentLatencies
from service.manager import ModelManager
from service.metrics import Metrics, ModelGauge
from service.preprocess_pool import PreprocessPool
from service.settings import Settings
from service.v2.statistics import Statistics

log = logging.getLogger("convzoo")

STATE_KEY = "services"  # its key in the lifespan state


@dataclass(frozen=True)
class Services:
    settings: Settings
    manager: ModelManager
    preprocess_pool: ThreadPoolExecutor  # decoding and preprocessing, apart from the loop and from inference
    metrics: Metrics
    statistics: Statistics  # the /v2 statistics extension
    recent: RecentLatencies  # live latencies, for model=auto and the frontier


@asynccontextmanager
async def running(settings: Settings, metrics: Metrics) -> AsyncIterator[Services]:
    """Build the services, preload the models in the background, and stop everything on exit.

    `metrics` is made with the app: its request log records into it whether or not the lifespan runs."""
    statistics, recent = Statistics(), RecentLatencies()
    # Every batch any model runs reports to the metrics, the statistics and the live latencies.
    manager = ModelManager.from_settings(
        settings, batch_hooks=(metrics.observe_batch, statistics.record, recent.record)
    )  # a bad registry fails start-up, loudly
    manager.preload_names()  # unknown preload names too
    metrics.watch_models(
        lambda: [
            ModelGauge(s.entry.name, s.status == "loaded", s.memory_estimate_bytes, s.status == "unavailable")
            for s in manager.states()
        ]
    )
    metrics.registry.register(LifecycleCollector(manager))  # loads, load seconds, evictions, calibrations
    # Lanes: large uploads cannot hold every thread while small ones wait (docs/security.md, Fairness).
    pool = PreprocessPool(
        small_threads=settings.preprocess_threads,
        large_threads=settings.preprocess_large_threads,
        large_pixels=settings.preprocess_large_pixels,
        process_memory_mb=settings.preprocess_process_memory_mb,
        max_pixels=settings.max_image_pixels,
    )
    await asyncio.get_running_loop().run_in_executor(pool, preprocess.warm_up)
    manager.start()
    log.info("%s", catalog.summary(manager.states(), manager.default))
    try:
        yield Services(settings, manager, pool, metrics, statistics, recent)
    finally:
        await manager.stop()
        pool.shutdown(wait=False, cancel_futures=True)
