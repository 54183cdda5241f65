"""ASGI middleware that caps request bodies, with or without Content-Length."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError, problem_details, reply_of


class BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` once a streamed body crosses the cap."""


class UploadLimit:
    """413 for a body over `max_bytes`: from Content-Length before reading, else as soon as it is crossed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        render: Callable[[Scope, ServiceError], Response] = lambda scope, exc: problem_details(reply_of(exc)),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.render = render  # the error body of the app the request is for (/v2 has its own)

    def _detail(self) -> str:
        return f"The request body is larger than the upload limit of {self.max_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self._detail())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._respond(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._respond(scope, receive, send)

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.render(scope, PayloadTooLarge(self._detail()))
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
