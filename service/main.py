"""The application factory. Nothing is configured or loaded at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from service import live_latency, observability, preprocess
from service.api.limits import UploadLimit
from service.api.routes import classify, compare, health, metrics, models, pareto, ui, v2
from service.errors import install_error_handlers
from service.manager import ModelManager
from service.preprocess_pool import PreprocessPool
from service.settings import Settings

log = logging.getLogger("convzoo")

# Routers of the app, in order; add new ones here.
# /models/pareto before /models/{name}.
ROUTERS: list[APIRouter] = [
    health.router,
    pareto.router,
    models.router,
    classify.router,
    compare.router,
    ui.router,
    metrics.router,
    v2.router,
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    manager = ModelManager.from_settings(settings)  # a bad registry fails start-up, loudly
    manager.preload_names()  # unknown preload names too
    app.state.manager = manager
    observability.attach(app, manager)
    app.state.live_latency = live_latency.attach(manager)
    # Decoding and preprocessing: their own threads, apart from the loop and from inference.
    # Two lanes: large uploads cannot hold every thread while small ones wait (docs/security.md).
    app.state.preprocess_pool = PreprocessPool(
        small_threads=settings.preprocess_threads,
        large_threads=settings.preprocess_large_threads,
        large_pixels=settings.preprocess_large_pixels,
        process_memory_mb=settings.preprocess_process_memory_mb,
        max_pixels=settings.max_image_pixels,
    )
    await asyncio.get_running_loop().run_in_executor(app.state.preprocess_pool, preprocess.warm_up)
    manager.start()
    log.info("convzoo serving %d models; default %s", len(manager.states()), manager.default)
    try:
        yield
    finally:
        await manager.stop()
        app.state.preprocess_pool.shutdown(wait=False, cancel_futures=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A convzoo app; `settings` defaults to the environment's (CONVZOO_*)."""
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="convzoo",
        summary="Classic convnets served through ONNX Runtime",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.error_renderers = {}
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    observability.install(app, settings)  # last: its request log wraps every response
    return app
