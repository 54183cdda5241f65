"""The service as a process: `python -m service` under uvicorn, readiness over time, upload limits on the
wire, graceful shutdown."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx

from tests.live import Server, start_service, stop_service
from tests.service.conftest import FashionSample, ServeFactory, Zoo


def test_ready_only_after_the_default_and_the_preloads_are_warm(
    zoo: Zoo, tmp_path: Path, fashion: FashionSample
) -> None:
    # A preload list without the default, one of them held before its load until the first probes are
    # answered: readiness waits for both and the default, on any machine, however fast it loads.
    default = zoo.registry.default
    slow, other = sorted(
        (m for m in zoo.registry.models if m.name != default and m.built), key=lambda m: m.name
    )[:2]
    gate = tmp_path / "let-the-load-go"
    server = start_service(
        registry_path=zoo.registry_path,
        models_dir=zoo.models_dir,
        log_path=tmp_path / "server.log",
        env={
            "CONVZOO_PRELOAD": f"{slow.name},{other.name}",
            "CONVZOO_CALIBRATION_S": "0.5",
            "HELD_MODEL": slow.name,
            "HELD_UNTIL": str(gate),
        },
        probe="/health/live",
        module="tests.service.held_load",
    )
    try:
        _ready_after_the_held_load(server, gate, default, slow.name, other.name, fashion)
    finally:
        stop_service(server)


def _ready_after_the_held_load(
    server: Server, gate: Path, default: str, slow: str, other: str, fashion: FashionSample
) -> None:
    first = httpx.get(server.url + "/health/ready")
    assert first.status_code == 503
    assert first.headers["content-type"] == "application/problem+json"
    assert "not yet warmed up" in first.json()["detail"] and "retry-after" in first.headers
    assert slow in first.json()["loading"]
    assert httpx.get(server.url + "/health/live").status_code == 200
    gate.touch()
    deadline = time.monotonic() + 60
    while httpx.get(server.url + "/health/ready").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    ready = httpx.get(server.url + "/health/ready").json()
    assert set(ready["loaded"]) == {default, slow, other}
    models = {m["name"]: m for m in httpx.get(server.url + "/models").json()["models"]}
    assert all(models[n]["status"] == "loaded" for n in (default, slow, other))
    r = httpx.post(server.url + "/classify", files={"file": ("shoe.png", fashion.png(0), "image/png")})
    assert r.status_code == 200 and r.json()["results"][0]["filename"] == "shoe.png"
    while models[default]["latency_ms"] is None:  # calibrated after readiness, off the requests' path
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
        models = {m["name"]: m for m in httpx.get(server.url + "/models").json()["models"]}


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


def test_upload_limits_on_the_wire(zoo: Zoo, serve: ServeFactory) -> None:
    server: Server = serve(zoo, CONVZOO_MAX_UPLOAD_MB="0.1")
    # Declared too large: answered from the headers, before any body is sent.
    head = (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 500000000\r\n\r\n"
    )
    reply = _raw_request(server, head, [])
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply
    # Chunked, no length: answered once the cap is crossed.
    head = (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    reply = _raw_request(server, head, [chunk] * 8)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert httpx.get(server.url + "/health/live").status_code == 200


def test_sigterm_shuts_down_cleanly(zoo: Zoo, serve: ServeFactory) -> None:
    server: Server = serve(zoo)
    server.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM.
    assert server.process.wait(15) in (0, -signal.SIGTERM)
    log = server.log()
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "Traceback" not in log
    assert f"HTTP on {server.url} (" in log  # where the front processes listen


def test_one_process_logs_its_http_address(zoo: Zoo, serve: ServeFactory) -> None:
    server: Server = serve(zoo, CONVZOO_FRONT_PROCESSES="0")
    assert f"HTTP on {server.url} (uvicorn, 1 worker(s))" in server.log()


def test_the_service_never_imports_torch(zoo: Zoo, fashion: FashionSample) -> None:
    import subprocess
    import sys

    script = f"""
import asyncio, sys
import httpx
from service.main import create_app
from service.core.settings import Settings
from tests.asgi import serving

async def main():
    app = create_app(Settings(registry_path={str(zoo.registry_path)!r}, models_dir={str(zoo.models_dir)!r},
                              calibration_s=0.01))
    async with serving(app) as served:
        await served.manager.wait_preloaded()
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post("/classify", content=sys.stdin.buffer.read(), headers={{"content-type": "image/png"}})
            assert r.status_code == 200, r.text

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH" if loaded else "NO-TORCH")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], input=fashion.png(0), capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip().endswith("NO-TORCH")
