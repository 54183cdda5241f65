"""Connection limits against a real uvicorn over real sockets: idle connections closed, heads that do not
arrive in time closed (408), stalled bodies cut off, heads over the size limit 431, connections beyond
the cap 503 at once, and the descriptor soft limit raised at start."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import Server, start_service, stop_service
from tests.security.conftest import address, server_rss
from tests.service.conftest import Zoo

LIMITS = {
    "CONVZOO_KEEP_ALIVE_S": "0.5",
    "CONVZOO_HEADER_TIMEOUT_S": "1",
    "CONVZOO_BODY_TIMEOUT_S": "1",
    "CONVZOO_MAX_HEADER_BYTES": "8192",
    "CONVZOO_MAX_CONNECTIONS": "40",
}


# The service alone, and with two front processes: every client connection is then a front's.
@pytest.fixture(scope="module", params=["0", "2"], ids=["service", "fronts"])
def server(
    source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    live = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=tmp_path_factory.mktemp("connections") / "server.log",
        env={**LIMITS, "CONVZOO_FRONT_PROCESSES": request.param},
    )
    try:
        yield live
    finally:
        stop_service(live)


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(address(server), timeout=5)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes the socket within `seconds`, and what it sent before."""
    sock.settimeout(0.05)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            part = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not part:
            return True, received
        received += part
    return False, received


def _healthy(server: Server) -> None:
    assert httpx.get(server.url + "/health/live", timeout=5).status_code == 200


def test_connections_that_send_nothing_are_closed(server: Server) -> None:
    socks = [_connect(server) for _ in range(20)]
    started = time.monotonic()
    for sock in socks:
        closed, data = _closed_within(sock, 3.0)
        assert closed and data == b"", data[:100]
        sock.close()
    assert time.monotonic() - started < 3.0
    _healthy(server)


def test_idle_keep_alive_connections_are_closed(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        closed, _ = _closed_within(sock, 2.0)
        assert closed


def test_a_head_that_dribbles_in_is_408_after_the_limit(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\n")
        started = time.monotonic()
        received = b""
        for i in range(40):  # a header byte every 100 ms, never the end of the head
            try:
                sock.sendall(b"X-Slow: " if i == 0 else b"a")
            except OSError:
                break
            closed, data = _closed_within(sock, 0.1)
            received += data
            if closed:
                break
        assert time.monotonic() - started < 2.5
        assert received.startswith(b"HTTP/1.1 408"), received[:100]
    _healthy(server)


def test_a_stalled_body_is_cut_off(server: Server) -> None:
    for sent in (b"", b"x" * 100):
        with _connect(server) as sock:
            sock.sendall(
                b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
                + sent
            )
            started = time.monotonic()
            closed, _ = _closed_within(sock, 4.0)
            assert closed, "a body that stopped after its head was never cut off"
            assert time.monotonic() - started < 3.0
    _healthy(server)


def test_a_head_over_the_size_limit_is_431(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"y" * 20_000 + b"\r\n\r\n"
        )
        closed, data = _closed_within(sock, 3.0)
        assert closed and data.startswith(b"HTTP/1.1 431"), data[:100]
    # An endless head: the server stops reading after its limit, so its memory does not follow the client.
    before = server_rss(server)
    sent = 0
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(3200):  # up to 200 MiB
                sock.sendall(b"z" * 65536)
                sent += 65536
        except OSError:
            pass
    assert sent < 16 << 20, f"{sent} bytes of one header line were accepted"
    assert server_rss(server) - before < 32 << 20
    _healthy(server)


def test_connections_beyond_the_cap_get_503_at_once(server: Server) -> None:
    # With fronts, each takes its share of the cap and the kernel spreads connections over them: the
    # service as a whole never holds more than the cap, and what is over a front's share is refused.
    cap = int(LIMITS["CONVZOO_MAX_CONNECTIONS"])
    socks = [_connect(server) for _ in range(cap + 10)]
    try:
        time.sleep(0.2)
        answers = []
        for sock in socks:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in socks:
            sock.settimeout(5)
            answers.append(sock.recv(4096))
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
        assert len(refused) + len(served) == len(socks), [a[:40] for a in answers]
        assert len(served) <= cap and len(refused) >= 10
        assert all(b"retry-after" in a.lower() for a in refused)
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.3)
    _healthy(server)


def test_the_descriptor_soft_limit_is_raised_to_the_hard_limit(server: Server) -> None:
    limits = Path(f"/proc/{server.process.pid}/limits").read_text().splitlines()
    (line,) = [x for x in limits if x.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert soft == hard, line


def test_a_body_answered_early_is_not_taken_for_a_head(server: Server) -> None:
    # A 404 may be sent before the body has arrived: the rest of that body is no head to count.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):
            r = client.post(
                "/classify", params={"model": "no-such-model"}, files={"file": ("a.png", b"x" * 200_000)}
            )
            assert r.status_code == 404, r.text
        assert client.get("/health/live").status_code == 200


def _head_of(size: int) -> bytes:
    """A GET /health/live head of exactly `size` bytes, as clients write heads."""
    start = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Filler: "
    end = b"\r\n\r\n"
    return start + b"y" * (size - len(start) - len(end)) + end


def test_a_head_at_the_limit_is_served_and_one_byte_more_is_431(server: Server) -> None:
    # Through a front too: the relay's own fields do not count against the client's head.
    limit = int(LIMITS["CONVZOO_MAX_HEADER_BYTES"])
    with _connect(server) as sock:
        sock.sendall(_head_of(limit))
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200"), limit
    with _connect(server) as sock:
        sock.sendall(_head_of(limit + 1))
        closed, data = _closed_within(sock, 3.0)
        assert closed and data.startswith(b"HTTP/1.1 431"), data[:100]


def _chunked_head(extra: bytes = b"") -> bytes:
    return (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        + b"Transfer-Encoding: chunked\r\n"
        + extra
        + b"\r\n"
    )


def _send_until_closed(sock: socket.socket, first: bytes, endless: bytes, cap: int) -> tuple[int, bytes]:
    """Send `first`, then `endless` until the server closes or `cap` bytes went; what came back."""
    sent = 0
    try:
        sock.sendall(first)
        while sent < cap:
            sock.sendall(endless)
            sent += len(endless)
    except OSError:
        pass
    _, data = _closed_within(sock, 3.0)
    return sent, data


def test_an_endless_trailer_section_is_431_and_not_held(server: Server) -> None:
    before = server_rss(server)
    with _connect(server) as sock:
        line = b"X-Trailer: " + b"t" * 50 + b"\r\n"
        sent, data = _send_until_closed(sock, _chunked_head() + b"1\r\nx\r\n0\r\n", line * 1000, 64 << 20)
    assert sent < 8 << 20, f"{sent} bytes of trailer fields were accepted"
    assert data.startswith(b"HTTP/1.1 431"), data[:100]
    assert server_rss(server) - before < 32 << 20
    _healthy(server)


def test_an_endless_chunk_extension_is_refused(server: Server) -> None:
    before = server_rss(server)
    with _connect(server) as sock:
        sent, data = _send_until_closed(sock, _chunked_head() + b"1;ext=", b"e" * 65536, 64 << 20)
    assert sent < 8 << 20, f"{sent} bytes of one chunk extension were accepted"
    assert data.startswith(b"HTTP/1.1 400"), data[:100]
    assert server_rss(server) - before < 32 << 20
    _healthy(server)


def test_a_transfer_coding_other_than_chunked_is_501(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        )
        closed, data = _closed_within(sock, 3.0)
        assert closed and data.startswith(b"HTTP/1.1 501"), data[:100]
    _healthy(server)
