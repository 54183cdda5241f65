"""A front process hands every request it does not answer itself to the service, over the service's own
HTTP socket (a Unix socket): the service answers it exactly as it answers its direct clients, and the
front relays the answer. Bodies are relayed as they arrive, in both directions, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httptools
from starlette.types import Message, Receive, Scope, Send

from service.api.limits import content_length
from service.errors import ErrorReply, problem_details
from service.logging import REQUEST_ID_HEADER

log = logging.getLogger("convzoo.fronts")

# Headers of one hop (RFC 9110, section 7.6.1), not relayed; the body's framing is set per hop.
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
# Response headers the front's own server writes: relayed, they would appear twice.
_OWN = {b"date", b"server"}
_READ = 64 * 1024


def _head(scope: Scope, body_length: int | None, request_id: str | None) -> bytes:
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    lines = [b"%s %s HTTP/1.1" % (scope["method"].encode(), target)]
    for name, value in scope["headers"]:
        if name in _HOP or name in (b"content-length", b"expect"):
            continue  # the body is sent at once: no 100 Continue to wait for, nor to relay
        if request_id is not None and name == REQUEST_ID_HEADER.lower().encode():
            continue  # the front's id for this request replaces the client's (which it kept if valid)
        lines.append(name + b": " + value)
    if request_id is not None:
        lines.append(REQUEST_ID_HEADER.encode() + b": " + request_id.encode())
    framing = b"transfer-encoding: chunked" if body_length is None else b"content-length: %d" % body_length
    lines += [framing, b"connection: close", b"", b""]
    return b"\r\n".join(lines)


class _Response:
    """httptools callbacks: the service's answer, relayed to the client as it is parsed."""

    def __init__(self, send: Send, head_only: bool) -> None:
        self.send = send
        self.head_only = head_only
        self.headers: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.started = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered not in _HOP and lowered not in _OWN:
            self.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        self.started = True
        if self.head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    async def relay(self, data: bytes) -> None:
        was_started = self.started
        self.parser.feed_data(data)
        if self.started and not was_started:
            status = self.parser.get_status_code()
            await self.send({"type": "http.response.start", "status": status, "headers": self.headers})
        if self.started and (self.chunks or self.complete):
            body, self.chunks = b"".join(self.chunks), []
            await self.send({"type": "http.response.body", "body": body, "more_body": not self.complete})


async def _send_body(writer: asyncio.StreamWriter, receive: Receive, chunked: bool) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            writer.close()
            return
        data = message.get("body", b"")
        if data:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            await writer.drain()
        if not message.get("more_body", False):
            if chunked:
                writer.write(b"0\r\n\r\n")
            return


async def forward(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    path: str,
    body: bytes | None = None,
    request_id: str | None = None,
) -> None:
    """Relay the request to the service at the Unix socket `path`: with `body` when it was read already,
    else as it arrives from `receive`."""
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        await _unavailable(scope, receive, send)
        return
    response = _Response(send, scope["method"] == "HEAD")
    sender: asyncio.Task[None] | None = None
    try:
        length = len(body) if body is not None else content_length(scope)
        writer.write(_head(scope, length, request_id))
        if body is not None:
            writer.write(body)
        else:
            sender = asyncio.get_running_loop().create_task(_send_body(writer, receive, length is None))
        while not response.complete:
            data = await reader.read(_READ)
            if not data:
                break
            await response.relay(data)
        if not response.started:
            await _unavailable(scope, receive, send)
        elif not response.complete:
            raise ConnectionError("the service closed the connection in the middle of an answer")
    except httptools.HttpParserError:
        log.exception("the service's answer could not be parsed")
        if not response.started:
            await _unavailable(scope, receive, send)
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        writer.close()


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    detail = "The service process did not answer; retry."
    reply = ErrorReply(503, "not-ready", "Service not ready", detail, retry_after_s=1)
    await problem_details(reply)(scope, receive, send)
