"""The application factory. Nothing is configured or loaded at import time."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from service import observability, services
from service.access import auth
from service.api.deps import serving_of
from service.api.hot_path import HotClassify, find_route
from service.api.limits import CloseUnread, UploadLimit
from service.api.routes import classify, compare, health, metrics, models, monitor, pareto, ui, v2
from service.core.errors import (
    PROBLEM_CONTENT,
    PROBLEM_SCHEMA,
    ServiceError,
    document_errors,
    install_error_handlers,
    problem_details,
    reply_of,
)
from service.core.settings import Settings
from service.fronts import process as front_processes
from service.grpc import server as grpc_server
from service.rollouts.versions import ClientId
from service.telemetry.logging import configure_logging
from service.telemetry.metrics import Metrics
from service.v2.errors import error_body

VERSION = "0.1.0"

# Routers of the app, in order; add new ones here. /models/pareto before /models/{name}.
ROUTERS: list[APIRouter] = [
    health.router,
    pareto.router,
    models.router,
    classify.router,
    compare.router,
    ui.router,
    metrics.router,
    monitor.router,
]


def _openapi(app: FastAPI, v2_app: FastAPI) -> Callable[[], dict[str, Any]]:
    """One document for the whole service: the app's routes, then the /v2 app's under its prefix, each
    with the error body its handlers write."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            document_errors(schema, PROBLEM_CONTENT)
            inner = v2_app.openapi()  # with its own error body
            for path, operations in inner.get("paths", {}).items():
                schema["paths"][(v2.PREFIX + path).rstrip("/")] = operations
            schema["components"]["schemas"].update(inner.get("components", {}).get("schemas", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _upload_limit_renderer(mount: v2.V2Mount) -> Callable[[Scope, ServiceError], Response]:
    # The upload limit answers before any route runs: in the error body of the app the request is for.
    def render(scope: Scope, exc: ServiceError) -> Response:
        match, _ = mount.matches(scope)
        return (error_body if match is Match.FULL else problem_details)(reply_of(exc))

    return render


def _in_process(settings: Settings, metrics: Metrics) -> AbstractAsyncContextManager[services.Services]:
    # Imported here, not at the top: a front process builds its app from this module too, and must not
    # load ONNX Runtime (the model manager's sessions), which is its memory paid once per front.
    from service import model_process

    return model_process.running(settings, metrics)


def create_app(
    settings: Settings | None = None,
    *,
    services_from: services.ServicesFrom = _in_process,
    metrics: Metrics | None = None,
    shared_port: bool = False,
    processes: int = 1,
) -> FastAPI:
    """A convzoo app; `settings` defaults to the environment's (CONVZOO_*).

    Every protocol a client speaks is answered by this app: in the service process when it has no front
    processes, else in each front, whose `services_from` reaches the service's models over the link;
    `shared_port`: other processes serve the same gRPC port (fronts, uvicorn workers); `processes`: how
    many serve the clients, splitting each API key's quota (docs/auth.md)."""
    settings = settings if settings is not None else Settings()
    configure_logging(settings.log_level)
    # per app; the request log records into it before, during and after the lifespan
    metrics = metrics if metrics is not None else Metrics()
    # API keys (service/access/auth.py): none without CONVZOO_API_KEYS_FILE, and then no cost at all
    # each process serving clients (fronts, or uvicorn workers) holds its share of every key's quota
    share = max(processes, settings.workers)
    access = auth.Access(settings, share=share) if settings.api_keys_file is not None else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, services.Services]]:
        async with services_from(settings, metrics) as built:
            fronts = await front_processes.start(built)  # None unless `python -m service` planned some
            served = built
            if access is not None:  # the requests' inferences checked against their key's models and quota
                access.known = frozenset(m.name for m in built.manager.registry.models)
                served = dataclasses.replace(built, manager=auth.GuardedModels(built.manager))
            # gRPC is served where HTTP is: by the fronts when there are any (they share its port).
            grpc = (
                await grpc_server.start(served, VERSION, shared=shared_port, access=access)
                if fronts is None
                else None
            )
            try:
                yield {services.STATE_KEY: served}  # the ASGI lifespan state: every request's scope["state"]
            finally:
                await front_processes.stop(fronts, settings.graceful_shutdown_s)
                await grpc_server.stop(grpc, settings.graceful_shutdown_s)

    app = FastAPI(
        title="convzoo",
        summary="Classic convnets served through ONNX Runtime",
        version=VERSION,
        lifespan=lifespan,
        # service/telemetry/tracing.py makes the spans; FastAPI's own would double them and cost every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app, problem_details)
    for router in ROUTERS:
        app.include_router(router)
    v2_app = v2.create_v2_app(VERSION)
    mount = v2.V2Mount(v2_app)
    app.router.routes.append(mount)
    app.openapi = _openapi(app, v2_app)  # type: ignore[method-assign]
    # innermost of the middleware: inside the upload limit and the request log, before the router
    app.add_middleware(HotClassify, route=find_route(classify.router.routes), serving=serving_of)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes, render=_upload_limit_renderer(mount))
    if access is not None:  # who is calling, before the upload limit reads anything
        app.add_middleware(auth.Guard, access=access, render=_upload_limit_renderer(mount))
    app.add_middleware(CloseUnread)  # around the upload limit: its refusals leave bodies unread too
    app.add_middleware(ClientId)  # the client's id, for a canary's choice of version (docs/rollouts.md)
    observability.install(app, metrics, settings)  # last: its request log (and tracing) wrap every response
    return app
