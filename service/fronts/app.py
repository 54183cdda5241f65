"""The ASGI app of a front process: the hot path of POST /classify (one raw image, a named model), its image
decoded and prepared here, in this process's own preprocessing pool, and its tensor inferred by the service's
models over the link; every other request relayed to the service (service/fronts/proxy.py).

Requests answered here are logged here and counted in the service's metrics (over the link); relayed
ones are logged and counted by the service, which answers them.
"""

from __future__ import annotations

import asyncio
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import preprocess, tracing
from service.api.hot_path import PATH, HotClassify, Serving
from service.api.limits import CloseUnread, UploadLimit
from service.errors import unknown_model
from service.fronts.link import ModelLink
from service.fronts.proxy import forward
from service.logging import RequestLog, RequestRecord
from service.preprocess_pool import PreprocessPool
from service.registry import ModelEntry, Registry
from service.settings import Settings

LINK_WAIT_S = 120.0  # a service whose start-up takes longer gets its fronts started again by its watch


def _label_only(request: Request) -> Response:
    raise RuntimeError("a front has no router: its /classify route only labels requests")


# The request log and the spans name a request by its route's path, as the service's router sets it. A front
# has no router (nor the service's routes, whose imports would load ONNX Runtime in every front).
CLASSIFY_ROUTE = Route(PATH, _label_only, methods=["POST"])


class FrontApp:
    def __init__(self, settings: Settings, registry: Registry, *, link_path: str, http_path: str) -> None:
        self.settings = settings
        self.registry = registry
        self.link_path = link_path
        self.http_path = http_path
        self.link = ModelLink(registry)
        names = {m.name for m in registry.models}
        # Images of every size are prepared here: tiny ones on the event loop, the others in this front's own
        # lanes (threads, and memory-limited decoding processes for large images), as in the service.
        self.pool = PreprocessPool(
            small_threads=settings.preprocess_threads,
            large_threads=settings.preprocess_large_threads,
            large_pixels=settings.preprocess_large_pixels,
            process_memory_mb=settings.preprocess_process_memory_mb,
            max_pixels=settings.max_image_pixels,
        )
        self.serving = Serving(self.link, settings, self.pool, self._entry, registry.default)
        hot = HotClassify(self._relay, route=CLASSIFY_ROUTE, serving=lambda scope: self.serving, relayed=True)
        self.relayed = CloseUnread(self._relay)
        self.hot: ASGIApp = RequestLog(
            CloseUnread(UploadLimit(hot, max_bytes=settings.max_upload_bytes)),
            observe=self._observe,
            known_models=lambda scope: names,
            default_model=lambda scope, route: registry.default if route == "/classify" else None,
        )
        if tracing.enabled():  # the span of a request answered here; relayed ones get the service's
            self.hot = cast(ASGIApp, tracing.TraceRequests(self.hot))

    def _entry(self, name: str) -> ModelEntry:
        try:
            return self.registry.get(name)
        except ValueError:
            raise unknown_model(name) from None

    def _observe(self, record: RequestRecord) -> None:
        self.link.observe(
            route=record.route, model=record.model, status=record.status, seconds=record.seconds
        )

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A request the front's request log has seen carries its id on, so that both name it alike.
        rid = (scope.get("state") or {}).get("request_id")
        await forward(scope, receive, send, path=self.http_path, request_id=rid)

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
                    await asyncio.get_running_loop().run_in_executor(self.pool, preprocess.warm_up)
                    await self._connect()
                except OSError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.link.close()
                self.pool.shutdown(wait=False, cancel_futures=True)
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
