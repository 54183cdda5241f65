"""The hot path: POST /classify with one raw image body and a named model, answered in plain ASGI.

This is the request a client sends in a loop, and for a small model the framework cost more than the
model: routing, dependency solving, query validation and response validation took about 40% of the
event loop's time per request (measured with py-spy at c32 on fmnist-lenet5). The middleware sits inside
the request log and the upload limit, so ids, access log, metrics and the body cap apply unchanged; it
answers only what it can answer exactly as the route would, and hands everything else to the app:

- `model` (not `auto`) and `top_k` as plain digits, each at most once, and no other query parameter;
- a raw body of an accepted image type (multipart goes to the route).

Errors are the route's: the same exceptions through the same table (service/core/errors.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import classification
from service.api.limits import BodyTooLarge
from service.api.selection import AUTO
from service.api.uploads import Upload, media_type_of
from service.core.errors import CLIENT_CLOSED, INTERNAL, ServiceError, logged_reply, problem_details
from service.core.registry import ModelEntry
from service.core.settings import Settings
from service.images.preprocess import ACCEPTED_MEDIA_TYPES
from service.interfaces import Models
from service.monitor.watch import Watch

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


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass(frozen=True)
class Serving:
    """What the hot path needs to answer: the service's own (`deps.serving_of`), or a front process's."""

    models: Models
    settings: Settings
    pool: Executor  # where images are prepared (service/api/classification.py): the service's or a front's
    entry: Callable[[str], ModelEntry]  # raises UnknownModel
    default: str
    watch: Watch | None = None  # the monitor (service/monitor/watch.py)


def takes(scope: Scope) -> tuple[str | None, int] | None:
    """(model, top_k) of a request the hot path answers; None for every other request."""
    if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
        return None
    query = simple_query(scope.get("query_string", b""))
    if query is None or media_type_of(scope) not in ACCEPTED_MEDIA_TYPES:
        return None
    return query


class HotClassify:
    """ASGI middleware: answers the hot path's requests itself (see the module's docstring).

    `serving` finds the models for a request: the service's own, or a front process's link to them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        route: BaseRoute,
        serving: Callable[[Scope], Serving | None],
    ) -> None:
        self.app = app
        self.route = route  # the /classify route: the request log's route label
        self.serving = serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = takes(scope)
        serving = self.serving(scope) if query is not None else None
        if query is None or serving is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["route"] = self.route
        state: dict[str, Any] = scope.setdefault("state", {})
        try:
            model, top_k = query
            deadline = time.monotonic() + serving.settings.request_timeout_s
            name = model or serving.default
            state["model"] = name
            await serving.models.learn(name)
            entry = serving.entry(name)
            classification.check_top_k(entry, top_k)
            data = await _body(receive)
            uploads = [Upload(filename=None, data=data)]
            answer = await classification.classify(
                serving.models,
                serving.settings,
                serving.pool,
                entry,
                uploads,
                top_k,
                state,
                started=started,
                deadline=deadline,
                watch=serving.watch,
            )
        except BodyTooLarge:
            raise  # the upload limit outside answers it, and closes the connection
        except ServiceError as exc:  # the app's exception handlers, as the route's errors get them
            await problem_details(logged_reply(exc, PATH))(scope, receive, send)
            return
        except ClientDisconnect:
            await problem_details(CLIENT_CLOSED)(scope, receive, send)
            return
        except Exception:
            log.exception("unhandled error on %s", PATH)
            await problem_details(INTERNAL)(scope, receive, send)
            return
        body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def find_route(routes: list[BaseRoute]) -> BaseRoute:
    """The app's POST /classify route."""
    for route in routes:
        if getattr(route, "path", None) == PATH and "POST" in (getattr(route, "methods", None) or ()):
            return route
    raise LookupError(f"the app has no POST {PATH} route")
