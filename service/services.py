"""Everything a request needs beyond itself, built once per app in its lifespan and handed to the routes
through the ASGI lifespan state (service.api.deps.ServicesDep).

The service process builds them around its model manager (service/model_process.py); a front process
around its link to that manager (service/fronts/remote.py). The routes see the same interfaces either way
(service/interfaces.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from service.core.settings import Settings
from service.interfaces import LiveLatencies, Models, ModelStatistics
from service.monitor.watch import Watch
from service.server.preprocess_pool import PreprocessPool
from service.telemetry.metrics import Metrics

STATE_KEY = "services"  # its key in the lifespan state


@dataclass(frozen=True)
class Services:
    settings: Settings
    manager: Models
    preprocess_pool: Executor  # decoding and preprocessing, apart from the loop and from inference
    metrics: Metrics  # this process's: its request log records into it
    statistics: ModelStatistics  # the /v2 statistics extension
    recent: LiveLatencies  # live latencies, for model=auto and the frontier
    exposition: Callable[[], Awaitable[bytes]]  # GET /metrics: the service's metrics, whoever asks
    monitor: Watch  # what the models see: answers scored and recorded (service/monitor/)


# How an app builds its services: (settings, metrics) -> an async context that yields them.
ServicesFrom = Callable[[Settings, Metrics], AbstractAsyncContextManager[Services]]


def preprocess_pool(settings: Settings) -> Executor:
    """The decoding and preprocessing lanes of one process (docs/security.md, Fairness)."""
    return PreprocessPool(
        small_threads=settings.preprocess_threads,
        large_threads=settings.preprocess_large_threads,
        large_pixels=settings.preprocess_large_pixels,
        process_memory_mb=settings.preprocess_process_memory_mb,
        max_pixels=settings.max_image_pixels,
    )
