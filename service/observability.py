"""Wiring of the metrics and the request log into an app."""

from __future__ import annotations

from collections.abc import Container

from fastapi import FastAPI
from starlette.types import Scope

from service.api.deps import services_of
from service.core.settings import Settings
from service.telemetry import tracing
from service.telemetry.logging import RequestLog
from service.telemetry.metrics import Metrics


def _known_models(scope: Scope) -> Container[str]:
    try:
        manager = services_of(scope.get("state")).manager
    except RuntimeError:  # no lifespan state: no model names
        return ()
    return {m.name for m in manager.registry.models}


def install(app: FastAPI, metrics: Metrics, settings: Settings) -> None:
    """At app creation, after the other middleware: the request log then wraps every response."""
    app.add_middleware(
        RequestLog,
        observe=lambda r: metrics.observe_request(
            route=r.route, model=r.model, status=r.status, seconds=r.seconds, client=r.client
        ),
        known_models=_known_models,
    )
    if settings.otlp_endpoint is not None and not tracing.enabled():
        tracing.enable_otlp(settings.otlp_endpoint)
    if tracing.enabled():  # off: not even a pass-through layer
        app.add_middleware(tracing.TraceRequests)  # outermost: the request log line is inside the span
