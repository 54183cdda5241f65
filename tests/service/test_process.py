"""The service as a process: `python -m service` under uvicorn, readiness over time, upload limits on the
wire, graceful shutdown."""

from __future__ import annotations

import signal
import socket
import time

import httpx

from tests.service.conftest import FashionSample, Server, Zoo


def test_ready_only_after_the_default_model_is_warm(zoo: Zoo, serve, fashion: FashionSample) -> None:
    # A long calibration keeps the default model loading for a while after start-up.
    server: Server = serve(zoo, CONVZOO_CALIBRATION_S="3")
    first = httpx.get(server.url + "/health/ready")
    assert first.status_code == 503
    assert first.headers["content-type"] == "application/problem+json"
    assert "not yet warmed up" in first.json()["detail"] and "retry-after" in first.headers
    assert httpx.get(server.url + "/health/live").status_code == 200
    deadline = time.monotonic() + 30
    while httpx.get(server.url + "/health/ready").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    models = httpx.get(server.url + "/models").json()["models"]
    default = next(m for m in models if m["name"] == zoo.registry.default)
    assert default["status"] == "loaded" and default["latency_ms"] > 0
    r = httpx.post(server.url + "/classify", files={"file": ("shoe.png", fashion.png(0), "image/png")})
    assert r.status_code == 200 and r.json()["results"][0]["filename"] == "shoe.png"


def _raw_request(server: Server, head: bytes, body_chunks: list[bytes]) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed: it did not read the rest
        data = b""
        while b"\r\n\r\n" not in data or len(data) < 100:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        return data


def test_upload_limits_on_the_wire(zoo: Zoo, serve) -> None:
    server: Server = serve(zoo, CONVZOO_MAX_UPLOAD_MB="0.1")
    # Declared too large: answered from the headers, before any body is sent.
    head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 500000000\r\n\r\n"
    reply = _raw_request(server, head, [])
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply
    # Chunked, no length: answered once the cap is crossed.
    head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    reply = _raw_request(server, head, [chunk] * 8)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert httpx.get(server.url + "/health/live").status_code == 200


def test_sigterm_shuts_down_cleanly(zoo: Zoo, serve) -> None:
    server: Server = serve(zoo)
    server.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM.
    assert server.process.wait(15) in (0, -signal.SIGTERM)
    log = server.log()
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "Traceback" not in log
