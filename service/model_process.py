"""The services of the process that holds the models: the model manager, its batchers and sessions, the
metrics, statistics and live latencies that every batch reports to."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.access import auth
from service.core import catalog
from service.core.settings import Settings
from service.fronts import process as front_processes
from service.images import preprocess
from service.models.live_latency import RecentLatencies
from service.models.manager import ModelManager
from service.monitor.live import Monitor
from service.monitor.watch import LocalWatch, references_of, sampler_of
from service.services import Services, preprocess_pool
from service.telemetry.lifecycle_metrics import LifecycleCollector
from service.telemetry.metrics import Metrics, ModelGauge
from service.telemetry.rollout_metrics import RolloutCollector
from service.v2.statistics import Statistics

log = logging.getLogger("convzoo")


def _reload_keys() -> None:
    auth.reload_all()
    front_processes.forward_running(signal.SIGHUP)


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
    metrics.registry.register(RolloutCollector(manager))  # versions served, shadow agreement, failures
    # Lanes: large uploads cannot hold every thread while small ones wait (docs/security.md, Fairness).
    pool = preprocess_pool(settings)
    await asyncio.get_running_loop().run_in_executor(pool, preprocess.warm_up)
    monitor = Monitor(
        references_of(settings),
        manager.entry,
        manager.labels,
        window=settings.monitor_window,
        min_answers=settings.monitor_min_answers,
        registry=metrics.registry,
    )
    watch = LocalWatch(settings, monitor, sampler_of(settings))
    manager.start()
    # SIGHUP: the API keys here and in every front, then the registry, rolling out the difference
    manager.install_reload_signal(also=_reload_keys)
    log.info("%s", catalog.summary(manager.states(), manager.default))

    async def exposition() -> bytes:
        return metrics.exposition()

    try:
        yield Services(settings, manager, pool, metrics, statistics, recent, exposition, watch)
    finally:
        watch.close()
        await manager.stop()
        pool.shutdown(wait=False, cancel_futures=True)
