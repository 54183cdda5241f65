"""The hot path: POST /classify with one raw image body and a named model, answered in plain ASGI.

This is the request a client sends in a loop, and for a small model the framework cost more than the
model: routing, dependency solving, query validation and response validation took about 40% of the
event loop's time per request (measured with py-spy at c32 on fmnist-lenet5). The middleware sits inside
the request log and the upload limit, so ids, access log, metrics and the body cap apply unchanged; it
answers only what it can answer exactly as the route would, and hands everything else to the app:

- `model` (not `auto`) and `top_k` as plain digits, each at most once, and no other query parameter;
- a raw body of an accepted image type (multipart goes to the route).

Errors are the route's: the same exceptions through the same table (service/errors.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import classification
from service.api.choice import AUTO
from service.api.deps import services_of
from service.api.limits import BodyTooLarge
from service.api.uploads import Upload
from service.errors import ErrorReply, ServiceError, problem_details, reply_of
from service.preprocess import ACCEPTED_MEDIA_TYPES
from service.services import Services

log = logging.getLogger("convzoo.errors")

PATH = "/classify"
DEFAULT_TOP_K = 5
_DIGITS = re.compile(r"[0-9]{1,9}")
_JSON_HEADERS = [(b"content-type", b"application/json")]


def simple_query(query_string: bytes) -> tuple[str | None, int] | None:
    """(model, top_k) when the query is one the hot path answers, else None (the route decides)."""
    model: str | None = None
    top_k: int | None = None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "model" and model is None and value != AUTO:
            model = value
        elif key == "top_k" and top_k is None and _DIGITS.fullmatch(value) and int(value) >= 1:
            top_k = int(value)
        else:
            return None
    return model, DEFAULT_TOP_K if top_k is None else top_k


def _media_type(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return str(value.decode("latin-1")).split(";")[0].strip().lower()
    return ""


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class HotClassify:
    """ASGI middleware: answers the hot path's requests itself (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, route: BaseRoute) -> None:
        self.app = app
        self.route = route  # the /classify route: the request log's route label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = None
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            query = simple_query(scope.get("query_string", b""))
        if query is None or _media_type(scope) not in ACCEPTED_MEDIA_TYPES:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            services = services_of(scope.get("state"))
        except RuntimeError:  # no lifespan: the app answers as it does without one
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            answer = await self._classify(scope, receive, services, *query, started=started)
        except BodyTooLarge:
            raise  # the upload limit outside answers it, and closes the connection
        except ServiceError as exc:
            reply = reply_of(exc)
            if reply.status >= 500 and reply.status != 503:
                log.error("%s on %s: %s", type(exc).__name__, PATH, exc.detail)
            await problem_details(reply)(scope, receive, send)
            return
        except ClientDisconnect:
            # Nobody reads the answer; the request log and metrics show 499, as the route's.
            detail = "The client closed the connection before the request body was received."
            reply = ErrorReply(499, "client-closed-request", "Client closed request", detail)
            await problem_details(reply)(scope, receive, send)
            return
        except Exception:
            log.exception("unhandled error on %s", PATH)
            reply = ErrorReply(500, "internal", "Internal error", "An unexpected error occurred.")
            await problem_details(reply)(scope, receive, send)
            return
        body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _classify(
        self,
        scope: Scope,
        receive: Receive,
        services: Services,
        model: str | None,
        top_k: int,
        *,
        started: float,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + services.settings.request_timeout_s
        manager = services.manager
        name = model or manager.default
        state: dict[str, Any] = scope.setdefault("state", {})
        state["model"] = name
        entry = manager.entry(name)
        classification.check_top_k(entry, top_k)
        data = await _body(receive)
        uploads = [Upload(filename=None, data=data)]
        return await classification.classify(
            services, entry, uploads, top_k, state, started=started, deadline=deadline
        )


def find_route(routes: list[BaseRoute]) -> BaseRoute:
    """The app's POST /classify route."""
    for route in routes:
        if getattr(route, "path", None) == PATH and "POST" in (getattr(route, "methods", None) or ()):
            return route
    raise LookupError(f"the app has no POST {PATH} route")
