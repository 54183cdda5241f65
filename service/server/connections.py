"""Connection limits under uvicorn's HTTP/1.1 protocol (httptools): a connection that sends no complete
request head in time is closed; so is one whose body stalls; a head over its size limit gets 431; and
beyond the connection cap a new connection gets 503 at once (docs/security.md, Connections).

uvicorn's own keep-alive timeout only starts after a response; nothing else bounds a client that
connects and waits, or sends a head or a body slowly, or sends an endless head (httptools buffers a
header line until it ends).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.core.settings import Settings

log = logging.getLogger("convzoo.connections")

BACKLOG = 2048  # uvicorn's, for every listening socket of the service and its fronts
RESERVED_DESCRIPTORS = 128  # model files, logs, pipes to worker processes, sockets the service opens


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings, descriptors: int, *, share: int = 1) -> Limits:
        """The limits of one process; `share`: how many processes serve the connections, each taking an
        equal part of CONVZOO_MAX_CONNECTIONS (front processes)."""
        cap = max(1, min(settings.max_connections, descriptors - RESERVED_DESCRIPTORS))
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_connections=max(1, cap // share),
        )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for every process of the service that serves HTTP: the guarded protocol."""
    return {
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(settings.graceful_shutdown_s),
        "http": GuardedHttpToolsProtocol,  # the limits below
        "timeout_keep_alive": settings.keep_alive_s,  # a float works: call_later
        **tls_options(settings),
    }


def tls_options(settings: Settings) -> dict[str, Any]:
    """HTTPS where the connections are (each front, or uvicorn alone): the certificate and key, and with a
    client CA, mutual TLS (a client without a certificate it signed fails the handshake)."""
    if settings.tls_cert_file is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
    }
    if settings.tls_client_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.tls_client_ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def shared_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not listening yet: every process that binds
    one to the same address and listens gets an even share of the connections from the kernel."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open descriptors to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            log.warning("could not raise the descriptor limit from %d to %d", soft, hard)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


_limits: Limits | None = None


def configure(limits: Limits) -> None:
    global _limits
    _limits = limits


def current_limits() -> Limits:
    """The limits `configure` set; in a process started without it (uvicorn workers), from the environment."""
    global _limits
    if _limits is None:
        _limits = Limits.from_settings(Settings(), raise_descriptor_limit())
    return _limits


def _canned(status: bytes, reason: str, extra: bytes = b"") -> bytes:
    body = reason.encode()
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"connection: close\r\n\r\n"
        + body
    )


TOO_MANY_CONNECTIONS = _canned(
    b"503 Service Unavailable", "Too many open connections.", b"retry-after: 1\r\n"
)
HEADERS_TOO_LARGE = _canned(b"431 Request Header Fields Too Large", "The request head is too large.")
HEAD_TIMEOUT = _canned(b"408 Request Timeout", "The request head did not arrive in time.")
TRAILERS_TOO_LARGE = _canned(
    b"431 Request Header Fields Too Large", "The request's trailer section is too large."
)
FRAMING_TOO_LARGE = _canned(b"400 Bad Request", "The request's chunk framing is too large for its body.")
CODING_NOT_IMPLEMENTED = _canned(
    b"501 Not Implemented", "Transfer codings other than chunked are not implemented; send the body as it is."
)

# What a chunked body may carry besides its data: a chunk-size line per chunk (hex digits and CRLF: 10 bytes
# frame up to 4 GiB), and what the head limit allows for extensions and the trailer section. Beyond that the
# client sends framing, not body, and neither the upload limit nor the body timeout sees it.
CHUNK_LINE_BYTES = 16


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.limits = current_limits()
        self._head_bytes = 0
        self._in_head = True  # until the first head is complete; then from each request's first byte
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_progress = 0.0
        self._refused = False
        self._after_head = 0  # bytes received since this request's head was complete
        self._body_bytes = 0  # of them, the body's data
        self._chunks = 0
        self._trailer_bytes = 0

    # --- the connection cap and the head timer ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            # Nothing or part of a head after the limit; a connection idle between requests never
            # gets here (uvicorn's keep-alive timer closes it first).
            if self._head_bytes:
                self.transport.write(HEAD_TIMEOUT)
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # --- the head's size ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            self._arm_head_timer()
        else:
            self._body_progress = self.loop.time()
            self._after_head += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(HEADERS_TOO_LARGE)
        elif not self._in_head and self._framing_bytes() > self._framing_allowance():
            log.info("closing a connection whose chunk framing outgrew its body")
            self._refuse(FRAMING_TOO_LARGE)

    def _refuse(self, answer: bytes) -> None:
        self._refused = True
        self.transport.write(answer)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # the parser stopped because a callback refused the request: already answered
            self.transport.close()
            return
        super().send_400_response(msg)

    def _head_size(self) -> int:
        # The request head as a client writes it: "METHOD target HTTP/1.1" CRLF, "name: value" CRLF per
        # field, CRLF. Exact for that form (a test holds a head at the limit to 200 and one byte more to 431).
        method = self.parser.get_method() if self.parser is not None else b"GET"
        fields = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(method) + 1 + len(self.url) + 1 + 8 + 2 + fields + 2

    def _framing_bytes(self) -> int:
        # What arrived after the head that is not body data: chunk-size lines, extensions, trailers. The read
        # that ended the head counts only after it, so this may fall short by part of one read, never more.
        return self._after_head - self._body_bytes

    def _framing_allowance(self) -> int:
        return self.limits.max_header_bytes + CHUNK_LINE_BYTES * (self._chunks + 1)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._after_head = self._body_bytes = self._chunks = self._trailer_bytes = 0
        self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
            return
        # A trailer field (after the last chunk): never used, so never kept (uvicorn would append it to the
        # request's headers, already handed to the app); its size is bounded as the head's is.
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes > self.limits.max_header_bytes:
            self._refuse(TRAILERS_TOO_LARGE)
            raise _Refused

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def _codings(self) -> list[bytes]:
        codings: list[bytes] = []
        for name, value in self.headers:
            if name.lower() == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
        return codings

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._head_size() > self.limits.max_header_bytes:  # a whole head in one read
            self._refuse(HEADERS_TOO_LARGE)
            raise _Refused
        if any(c != b"chunked" for c in self._codings()):  # RFC 9112, 6.1: a coding not understood is 501
            self._refuse(CODING_NOT_IMPLEMENTED)
            raise _Refused
        self._body_progress = self.loop.time()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_check)
        super().on_headers_complete()

    # --- a stalled body ----------------------------------------------------------------------------------

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        if self.flow.read_paused:  # the service is not reading (its buffer is full): not the client's stall
            self._body_progress = self.loop.time()
        idle = self.loop.time() - self._body_progress
        if idle >= self.limits.body_timeout_s:
            log.info("closing a connection whose request body stalled for %.1f s", idle)
            self.transport.close()  # the app sees a disconnect: 499 in the request log
            return
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s - idle, self._body_check)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next head is counted from its first byte (on_message_begin): a response may complete before
        # its request's body has arrived, and that body is no head.
        self._head_bytes = 0


def content_length(scope: Scope) -> int | None:
    """A request's declared Content-Length; None without one, or with one that is no number."""
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
