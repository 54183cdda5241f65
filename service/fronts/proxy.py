"""A front process hands every request it does not answer itself to the service, over the service's own
HTTP socket (a Unix socket): the service answers it exactly as it answers its direct clients, and the
front relays the answer. Bodies are relayed as they arrive, in both directions, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httptools
from starlette.types import Message, Receive, Scope, Send

from service.api.limits import content_length, has_body
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


def _body_length(scope: Scope) -> int | None:
    """The request body's length, None when it comes chunked. A request without a body is sent with a
    length of 0, so that nothing is left to send once the service has answered."""
    return content_length(scope) if has_body(scope) else 0


async def _send(
    sock: socket.socket, head: bytes, body: bytes | None, receive: Receive, chunked: bool
) -> None:
    """The request: its head and `body`, or, when that is None, the body as it arrives from `receive`."""
    loop = asyncio.get_running_loop()
    if body is not None:
        await loop.sock_sendall(sock, head + body)
        return
    await loop.sock_sendall(sock, head)
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            # The service sees the request cut short; the answer loop sees the end of its answer.
            sock.shutdown(socket.SHUT_RDWR)
            return
        data = message.get("body", b"")
        if data:
            await loop.sock_sendall(sock, b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if not message.get("more_body", False):
            if chunked:
                await loop.sock_sendall(sock, b"0\r\n\r\n")
            return


async def _stop(sender: asyncio.Task[None]) -> None:
    """Stops sending the request, if it is still being sent. The service may answer before it has read the
    whole body (a 413, a 404) and close its end: the rest of the body is not needed then, and a failed
    write must not lose the answer already on its way (an asyncio stream would: a broken pipe on the
    write side is raised on the next read, before the data buffered for it). The client's connection
    then ends with the answer (`limits.CloseUnread`, around the relay)."""
    if not sender.done():
        sender.cancel()
    with contextlib.suppress(BaseException):
        await sender


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
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    sender: asyncio.Task[None] | None = None
    response = _Response(send, scope["method"] == "HEAD")
    try:
        try:
            await loop.sock_connect(sock, path)
        except OSError:
            await _unavailable(scope, receive, send)
            return
        length = len(body) if body is not None else _body_length(scope)
        head = _head(scope, length, request_id)
        if length == 0:
            body = b""
        sender = loop.create_task(_send(sock, head, body, receive, length is None))
        while not response.complete:
            try:
                data = await loop.sock_recv(sock, _READ)
            except OSError:  # reset: what was read is all there is
                data = b""
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
            await _stop(sender)
        sock.close()


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    detail = "The service process did not answer; retry."
    reply = ErrorReply(503, "not-ready", "Service not ready", detail, retry_after_s=1)
    await problem_details(reply)(scope, receive, send)
