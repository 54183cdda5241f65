"""ASGI middleware that caps request bodies, with or without Content-Length, and refuses multipart bodies
in a charset other than UTF-8 or Latin-1; that ends a connection whose request body was not read; and the
text of a client-chosen name made safe to echo."""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import PayloadTooLarge, ServiceError, UnsupportedMediaType, problem_details, reply_of
from service.server.connections import content_length

# The charsets a multipart body's part headers may be declared in. Others (utf-7, unicode_escape, ...)
# decode a filename into text that no JSON encoder can write, such as a lone surrogate.
MULTIPART_CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})
MAX_NAME_CHARS = 255


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
        charset = _multipart_charset(scope)
        if charset is not None and charset not in MULTIPART_CHARSETS:
            await self._refuse_charset(scope, receive, send, charset)
            return
        declared = content_length(scope)
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

    async def _refuse_charset(self, scope: Scope, receive: Receive, send: Send, charset: str) -> None:
        detail = f"A multipart body in charset {charset!r} is not accepted; send UTF-8."
        response = self.render(scope, UnsupportedMediaType(detail))
        response.headers["Connection"] = "close"  # the body is not read
        await response(scope, receive, send)


_CLOSE = (b"connection", b"close")


# A body declared this small is read and dropped before an early answer, which then keeps its connection:
# closed with the body unread in its receive buffer, the socket sends a reset, and a client still sending or
# not yet reading loses the answer (the soak's 400s and 404s on small uploads came back as ReadError).
DRAIN_BYTES = 256 * 1024


class CloseUnread:
    """ASGI middleware: an answer that starts before the request's body was read in full ends its
    connection (an error mid-upload, or before it). Kept open, the connection would read and drop the rest
    of the body first, for as long as the client cares to send it: a chunked body has no end of its own.
    A body of a declared length up to DRAIN_BYTES is read and dropped first instead, so that its answer
    reaches the client and the connection is kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        read = False
        declared = content_length(scope)
        small = declared is not None and declared <= DRAIN_BYTES

        async def tracked_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                read = True  # the whole body, or the client gone
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not read and small:
                while not read:  # at most `declared` bytes, within the connection's body timeout
                    await tracked_receive()
            if message["type"] == "http.response.start" and not read:
                headers = message.get("headers", [])
                if not any(key == b"connection" for key, _ in headers):
                    message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        await self.app(scope, tracked_receive, closing_send)


def chunked(scope: Scope) -> bool:
    """Whether the request declares a Transfer-Encoding: a body of a length it does not say."""
    return any(key == b"transfer-encoding" for key, _ in scope.get("headers", []))


def has_body(scope: Scope) -> bool:
    """Whether the request has a body to read: it has one unless it says it has none (RFC 9112, 6.3)."""
    declared = content_length(scope)
    return declared != 0 if declared is not None else chunked(scope)


def _multipart_charset(scope: Scope) -> str | None:
    """The normalised `charset` parameter of a multipart Content-Type; None when there is none."""
    for key, value in scope.get("headers", []):
        if key != b"content-type":
            continue
        media, *params = value.decode("latin-1").split(";")
        if media.strip().lower() != "multipart/form-data":
            return None
        for param in params:
            name, _, given = param.partition("=")
            if name.strip().lower() == "charset":
                given = given.strip().strip('"')
                try:
                    return codecs.lookup(given).name
                except LookupError:
                    return given[:40] or "(empty)"
    return None


def safe_text(name: str | None) -> str | None:
    """A client-chosen name fit to echo in JSON: valid UTF-8 (lone surrogates replaced), no control
    characters, at most MAX_NAME_CHARS characters."""
    if name is None:
        return None
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cs") else c for c in name[:MAX_NAME_CHARS])
