"""Wiring of the metrics, the request log, the v2 statistics and the v2 error shape into an app."""

from __future__ import annotations

from collections.abc import Container

from fastapi import FastAPI

from service import tracing
from service.api.routes import v2
from service.errors import register_error_renderer
from service.logging import RequestLog, configure_logging
from service.manager import ModelManager
from service.metrics import Metrics, ModelGauge
from service.settings import Settings
from service.v2.statistics import Statistics


def install(app: FastAPI, settings: Settings) -> None:
    """At app creation, after the other middleware: the request log then wraps every response."""
    configure_logging(settings.log_level)
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.v2_statistics = Statistics()
    register_error_renderer(app, v2.PREFIX, v2.render_error)

    def known_models() -> Container[str]:
        manager: ModelManager | None = getattr(app.state, "manager", None)
        return {m.name for m in manager.registry.models} if manager is not None else ()

    def default_model(route: str) -> str | None:
        manager: ModelManager | None = getattr(app.state, "manager", None)
        return manager.default if manager is not None and route == "/classify" else None

    app.add_middleware(
        RequestLog,
        observe=lambda r: metrics.observe_request(route=r.route, model=r.model, status=r.status, seconds=r.seconds),
        known_models=known_models,
        default_model=default_model,
    )
    if settings.otlp_endpoint is not None and not tracing.enabled():
        tracing.enable_otlp(settings.otlp_endpoint)
    if tracing.enabled():  # off: not even a pass-through layer
        app.add_middleware(tracing.TraceRequests)  # outermost: the request log line is inside the span


def attach(app: FastAPI, manager: ModelManager) -> None:
    """In the lifespan, before preloading: every batcher reports to the metrics and the statistics."""
    metrics: Metrics = app.state.metrics
    stats: Statistics = app.state.v2_statistics
    manager.batch_hooks.extend([metrics.observe_batch, stats.record])
    metrics.watch_models(
        lambda: [
            ModelGauge(s.entry.name, s.status == "loaded", s.size_bytes, s.status == "unavailable")
            for s in manager.states()
        ]
    )
