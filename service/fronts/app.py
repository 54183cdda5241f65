"""The ASGI app of a front process: the hot path of POST /classify for tiny images, answered here with
the service's models over the link; every other request relayed to the service (service/fronts/proxy.py).

Requests answered here are logged here and counted in the service's metrics (over the link); relayed
ones are logged and counted by the service, which answers them.
"""

from __future__ import annotations

import asyncio
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import tracing
from service.api.hot_path import PATH, HotClassify, Serving
from service.api.limits import CloseUnread, UploadLimit
from service.errors import unknown_model
from service.fronts.link import ModelLink
from service.fronts.proxy import forward
from service.logging import RequestLog, RequestRecord
from service.registry import ModelEntry, Registry
from service.settings import Settings

LINK_WAIT_S = 120.0  # a service whose start-up takes longer gets its fronts started again by its watch


def _label_only(request: Request) -> Response:
    raise RuntimeError("a front has no router: its /classify route only labels requests")


# The request log and the spans name a request by its route's path, as the service's router sets it. A front
# has no router (nor the service's routes, whose imports would load ONNX Runtime in every front).
CLASSIFY_ROUTE = Route(PATH, _label_only, methods=["POST"])


async def _nothing_more() -> Message:
    return {"type": "http.disconnect"}


class FrontApp:
    def __init__(self, settings: Settings, registry: Registry, *, link_path: str, http_path: str) -> None:
        self.settings = settings
        self.registry = registry
        self.link_path = link_path
        self.http_path = http_path
        self.link = ModelLink(registry)
        names = {m.name for m in registry.models}
        # No pool: only tiny images are prepared here (the others are handed on), on the event loop.
        self.serving = Serving(self.link, settings, None, self._entry, registry.default)
        hot = HotClassify(
            self._relay,
            route=CLASSIFY_ROUTE,
            serving=lambda scope: self.serving,
            hand_on=self._hand_on,
        )
        self.relayed = CloseUnread(self._relay)
        self.hot: ASGIApp = RequestLog(
            CloseUnread(UploadLimit(hot, max_bytes=settings.max_upload_bytes)),
            observe=self._observe,
            known_models=lambda scope: names,
        )
        if tracing.enabled():  # the span of a request answered here; relayed ones get the service's
            self.hot = cast(ASGIApp, tracing.TraceRequests(self.hot))

    def _entry(self, name: str) -> ModelEntry:
        try:
            return self.registry.get(name)
        except ValueError:
            raise unknown_model(name, [m.name for m in self.registry.models]) from None

    def _observe(self, record: RequestRecord) -> None:
        self.link.observe(
            route=record.route, model=record.model, status=record.status, seconds=record.seconds
        )

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A request the front's request log has seen carries its id on, so that both name it alike.
        rid = (scope.get("state") or {}).get("request_id")
        await forward(scope, receive, send, path=self.http_path, request_id=rid)

    async def _hand_on(self, scope: Scope, body: bytes, send: Send) -> None:
        rid = (scope.get("state") or {}).get("request_id")
        await forward(scope, _nothing_more, send, path=self.http_path, body=body, request_id=rid)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self.hot(scope, receive, send)  # it relays what it does not answer
        elif scope["type"] == "http":
            await self.relayed(scope, receive, send)
        else:  # no websocket routes anywhere
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._connect()
                except OSError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.link.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _connect(self) -> None:
        # Fronts start beside the service: the link opens once the service's lifespan has built its models'
        # manager. Until then the front does not listen.
        deadline = asyncio.get_running_loop().time() + LINK_WAIT_S
        while True:
            try:
                await self.link.connect(self.link_path)
                return
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)
