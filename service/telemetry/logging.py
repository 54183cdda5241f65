"""Structured logs: JSON lines, one per request, carrying the request id echoed in `X-Request-ID`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Container
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.telemetry import tracing

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only when it is short and plain, so it is safe in headers and logs.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_request_id: ContextVar[str | None] = ContextVar("convzoo_request_id", default=None)

access_log = logging.getLogger("convzoo.access")

# LogRecord attributes that are not extra fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def current_request_id() -> str | None:
    """The id of the request being served by this task, if any."""
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and any `extra` fields."""

    _second: int = -1
    _prefix: str = ""

    def _timestamp(self, created: float) -> str:
        # ISO 8601 in UTC to the millisecond; the part up to the second is made once a second (a request
        # log line is written per request).
        second = int(created)
        if second != self._second:
            self._prefix = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # the service's or one of its front processes' (docs/architecture.md)
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or current_request_id()
        if rid is not None:
            line["request_id"] = rid
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


_HANDLER_MARK = "_convzoo_json"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the `sys.stderr` of the moment, so a replaced stderr (a test's capture) is followed."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def _plain_console(handler: logging.Handler) -> bool:
    # A console handler of logging.basicConfig: replaced, so that every line on the console is JSON.
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)


def configure_logging(level: str) -> None:
    """JSON lines on stderr at `level` for the service's and uvicorn's loggers; idempotent.

    Python warnings are logged (logger `py.warnings`). Plain console handlers (logging.basicConfig's) are replaced; others (e.g. a test's log capture)
    are left in place. uvicorn's access log is switched off: the request log below replaces it.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False) or _plain_console(h)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
        uv.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True
    # Python warnings (Pillow's DecompressionBombWarning, a library's DeprecationWarning) go through
    # logging as JSON lines too: written raw to stderr they broke the one-object-per-line log.
    logging.captureWarnings(True)


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    route: str  # the matched route's template, e.g. /v2/models/{name}/infer; "unmatched" otherwise
    model: str  # a registry model name, or "" when the request names none
    status: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    client: str = ""  # the API key id (service/access/auth.py), never its secret; "" without one


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _request_id_of(scope: Scope) -> str:
    given = _header(scope, REQUEST_ID_HEADER.lower().encode())
    if given is not None and _CLIENT_ID.match(given):
        return given
    return uuid.uuid4().hex


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    # In a mounted app (/v2) the route's path is relative to the mount: put the mount's path back
    # (its root route, "/", is the mount's own path: /v2).
    mount = str(scope.get("root_path", ""))[len(str(scope.get("app_root_path", ""))) :]
    return mount if mount and path == "/" else mount + path


def _model_of(scope: Scope, known: Container[str], default: Callable[[str], str | None]) -> str:
    """The model a request is about: set by its handler, else its `name` path or `model` query parameter."""
    state = scope.get("state") or {}
    chosen = state.get("model")
    if isinstance(chosen, str) and chosen in known:
        return chosen
    name = (scope.get("path_params") or {}).get("name")
    if isinstance(name, str) and name in known:
        return name
    query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("model")
    if query and query[0] in known:
        return str(query[0])
    # Only names from the registry become labels: a client cannot create metric series.
    return default(_route_of(scope)) or ""


class RequestLog:
    """ASGI middleware: the request id, one log line per request, and the per-request metrics.

    `observe` receives every finished request (the metrics); `known_models` and `default_model`
    name the registry's models, read from each request's scope (its lifespan state holds the registry).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        observe: Callable[[RequestRecord], None] | None = None,
        known_models: Callable[[Scope], Container[str]] = lambda scope: (),
        default_model: Callable[[Scope, str], str | None] = lambda scope, route: None,
    ) -> None:
        self.app = app
        self.observe = observe
        self.known_models = known_models
        self.default_model = default_model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = _request_id.set(rid)
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._finish(scope, rid, status, time.perf_counter() - started)
            _request_id.reset(token)

    def _finish(self, scope: Scope, rid: str, status: int, seconds: float) -> None:
        timings = (scope.get("state") or {}).get("timings") or {}
        record = RequestRecord(
            request_id=rid,
            method=scope.get("method", ""),
            path=scope.get("path", ""),
            route=_route_of(scope),
            model=_model_of(scope, self.known_models(scope), lambda route: self.default_model(scope, route)),
            status=status,
            seconds=seconds,
            timings={k: round(float(v), 3) for k, v in timings.items()},
            client=str((scope.get("state") or {}).get("client") or ""),
        )
        level = logging.ERROR if status >= 500 and status != 503 else logging.INFO
        access_log.log(
            level,
            "%s %s %d",
            record.method,
            record.path,
            status,
            extra={
                "request_id": rid,
                "method": record.method,
                "path": record.path,
                "route": record.route,
                "model": record.model or None,
                "status": status,
                "duration_ms": round(seconds * 1e3, 3),
                **({"timings_ms": record.timings} if record.timings else {}),
                **({"client": record.client} if record.client else {}),
            },
        )
        if self.observe is not None:
            try:
                self.observe(record)
            except Exception:
                logging.getLogger("convzoo.metrics").exception("recording request metrics failed")
