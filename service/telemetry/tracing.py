"""OpenTelemetry tracing of requests: off unless CONVZOO_OTLP_ENDPOINT is set, and then free of cost.

A traced request is one tree:

    receive                  the server span (REST: the ASGI request; gRPC: the call), parent from `traceparent`
    ├── decode               image decoding (/classify), the request body or message's tensors (/v2, gRPC)
    ├── preprocess           resize, crop and normalise (/classify)
    ├── batch                the request's time in its model's batcher; attributes: model, batch sizes
    │   ├── queue            waiting for a batch (measured by the batcher, placed at the batch's start)
    │   └── inference        the batch's run through ONNX Runtime (measured by the batcher)
    └── encode               the response (/v2, gRPC)

When tracing is off every helper here is a no-op: `traced` and `bind` hand back the function itself,
`span` a shared null context, and no OpenTelemetry SDK object exists.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from service.interfaces import Models
    from service.models.batcher import InferTimings

P = ParamSpec("P")
R = TypeVar("R")

SERVICE_NAME = "convzoo"
_PROPAGATOR = TraceContextTextMapPropagator()
_NULL = contextlib.nullcontext()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


# --- switching on and off ---------------------------------------------------------------------------------


def enable(processor: SpanProcessor) -> None:
    """Trace every request from now on, handing spans to `processor` (tests: an in-memory exporter)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    global _provider, _tracer
    disable()
    _provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("convzoo")


def enable_otlp(endpoint: str) -> None:
    """Export by OTLP over HTTP (protobuf) to `endpoint`, e.g. http://collector:4318/v1/traces."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    enable(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))


def disable() -> None:
    """Stop tracing; spans already ended are flushed first."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, None


def enabled() -> bool:
    return _tracer is not None


# --- spans ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> Iterator[trace.Span]:
    """The request's root span in this process, a child of the caller's `traceparent` when there is one."""
    assert _tracer is not None
    parent = _PROPAGATOR.extract(carrier=dict(headers))
    # Statuses are set from the answer (HTTP status, gRPC code), not from exceptions: a gRPC abort is one.
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        yield current


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child of the current span; a null context when tracing is off."""
    if _tracer is None:
        return _NULL
    return _tracer.start_as_current_span(name, attributes=attributes)


def traced(name: str, fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, run inside a span `name` that is a child of the span current here and now, wherever (on
    whichever thread) it is later called. `fn` itself when tracing is off."""
    if _tracer is None:
        return fn
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        def inner() -> R:
            with span(name):
                return fn(*args, **kwargs)

        return captured.copy().run(inner)

    return run


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, run in the current trace context on whichever thread calls it (thread pools do not carry
    it). `fn` itself when tracing is off."""
    if _tracer is None:
        return fn
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return run


async def infer(
    manager: Models, name: str, batch: np.ndarray, *, deadline: float
) -> tuple[np.ndarray, InferTimings]:
    """`manager.infer`, inside a `batch` span with the batcher's measured `queue` and `inference`."""
    if _tracer is None:
        return await manager.infer(name, batch, deadline=deadline)
    with _tracer.start_as_current_span("batch", attributes={"convzoo.model": name}) as current:
        start_ns = time.time_ns()
        logits, timings = await manager.infer(name, batch, deadline=deadline)
        current.set_attribute("convzoo.batch.size", max(timings.batch_sizes))
        current.set_attribute("convzoo.batch.sizes", list(timings.batch_sizes))
        current.set_attribute("convzoo.images", int(batch.shape[0]))
        queue_end = start_ns + int(timings.queue_ms * 1e6)
        _past_span("queue", start_ns, queue_end)
        _past_span("inference", queue_end, queue_end + int(timings.inference_ms * 1e6))
        return logits, timings


def _past_span(name: str, start_ns: int, end_ns: int) -> None:
    assert _tracer is not None
    _tracer.start_span(name, start_time=start_ns).end(end_time=end_ns)


def annotate(**attributes: str) -> None:
    """Attributes of the request's span (`convzoo.<name>`), when tracing is on."""
    if _tracer is not None:
        current = trace.get_current_span()
        for name, value in attributes.items():
            current.set_attribute(f"convzoo.{name}", value)


def mark_failed(code: str, message: str) -> None:
    """Record a failed call on the current span (a gRPC status; HTTP statuses are set by the middleware)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    current.set_attribute("rpc.grpc.status_code", code)
    current.set_status(trace.Status(trace.StatusCode.ERROR, message))


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), for the log line; None outside a traced request."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# --- the REST side: one ASGI middleware -------------------------------------------------------------------


class TraceRequests:
    """ASGI middleware: the `receive` span of every HTTP request (outermost, so the log line is inside)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if _tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        attributes = {"http.request.method": scope.get("method", ""), "url.path": scope.get("path", "")}
        with server_span("receive", headers, attributes) as current:

            async def send_status(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        current.set_status(trace.StatusCode.ERROR)
                await send(message)

            await self.app(scope, receive, send_status)
            route = getattr(scope.get("route"), "path", None)
            if isinstance(route, str):
                current.set_attribute("http.route", route)
