"""The service as a process under stress: SIGTERM with requests in flight, clients that disconnect
mid-upload or mid-inference, and overload at twice capacity. A real uvicorn (`python -m service`)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.artifacts import install_artifact
from tests.live import Server
from tests.security.conftest import (
    address,
    open_fds,
    rss_bytes,
    slow_conv_model,
    threads_of,
)
from tests.service.conftest import FashionSample, ServeFactory, Zoo

MIB = 1 << 20


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _server_sockets(server: Server) -> list[int]:
    """The receive queue (bytes not yet read by the server) of each server-side TCP connection in
    ESTABLISHED state on the server's port (from /proc/net/tcp)."""
    port = address(server)[1]
    queues = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            queues.append(int(fields[4].split(":")[1], 16))
    return queues


def all_read(server: Server, count: int) -> bool:
    """`count` connections are established and the server has read every byte sent on them. A connection
    still in the listen backlog, or one whose request the server has not read yet, has a non-empty receive
    queue: SIGTERM then closes it unanswered (uvicorn closes connections with no request in progress)."""
    queues = _server_sockets(server)
    return len(queues) >= count and not any(queues)


# ---- SIGTERM with 16 requests in flight -------------------------------------------------------------------


def test_sigterm_with_16_requests_in_flight(zoo: Zoo, serve: ServeFactory, fashion: FashionSample) -> None:
    grace = 8.0
    # Every request waits for a batch cut 2.5 s after the first image is queued: all 16 are in flight.
    server: Server = serve(
        zoo,
        CONVZOO_MAX_QUEUE_DELAY_US="2500000",
        CONVZOO_BATCH_WHEN_IDLE="false",  # the first one too
        CONVZOO_MAX_BATCH_SIZE="64",
        CONVZOO_GRACEFUL_SHUTDOWN_S=str(grace),
    )
    results: dict[int, int | str] = {}

    def one(i: int) -> None:
        try:
            with httpx.Client(timeout=30) as client:
                r = client.post(
                    server.url + "/classify", files={"file": (f"{i}.png", fashion.png(i), "image/png")}
                )
                results[i] = r.status_code
        except Exception as exc:  # noqa: BLE001  (recorded, asserted below)
            results[i] = repr(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    # The precondition is that the server has read all 16 requests, not a pause: on a loaded machine the
    # front may take longer than any fixed sleep to read the last ones.
    _wait_for(lambda: all_read(server, 16), 20, "16 requests read by the server")
    time.sleep(0.3)  # a read request is parsed and preprocessed in the same turn of the event loop
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert server.process.poll() is None, "exited with requests in flight"
    with pytest.raises(OSError):  # ConnectionRefusedError: the listening socket is closed
        socket.create_connection(address(server), timeout=2).close()
    code = server.process.wait(grace + 5)
    exited_after = time.monotonic() - signalled
    for t in threads:
        t.join(10)
    assert results == dict.fromkeys(range(16), 200), results
    assert code in (0, -signal.SIGTERM)
    assert exited_after < grace, f"exited {exited_after:.1f} s after SIGTERM"
    assert "Traceback" not in server.log()


# ---- clients that disconnect ------------------------------------------------------------------------------


def _multipart(png: bytes) -> tuple[bytes, bytes]:
    boundary = b"cut-short"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary + b"--\r\n"
    )
    return b"multipart/form-data; boundary=" + boundary, body


def _head(content_type: bytes, length: int) -> bytes:
    return (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )


def test_clients_disconnecting_mid_upload_or_mid_inference_leak_nothing(
    zoo: Zoo, serve: ServeFactory, fashion: FashionSample
) -> None:
    server: Server = serve(
        zoo, CONVZOO_MAX_QUEUE_DELAY_US="300000", CONVZOO_BATCH_WHEN_IDLE="false", CONVZOO_MAX_BATCH_SIZE="64"
    )
    pid = server.process.pid
    content_type, body = _multipart(fashion.png(0))

    def good_burst(n: int) -> list[int]:
        async def run() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                rs = await asyncio.gather(
                    *(
                        client.post("/classify", files={"file": (f"{i}.png", fashion.png(i), "image/png")})
                        for i in range(n)
                    )
                )
            return [r.status_code for r in rs]

        return asyncio.run(run())

    assert good_burst(16) == [200] * 16  # warm-up: pools, arenas, lazy imports
    time.sleep(0.5)
    fds, rss = open_fds(pid), rss_bytes(pid)
    threads = 0

    for round_ in range(3):
        socks = []
        for _ in range(10):  # mid-upload: a tenth of the declared body, then gone
            s = socket.create_connection(address(server))
            s.sendall(_head(content_type, len(body)) + body[: len(body) // 10])
            socks.append(s)
        for _ in range(10):  # mid-inference: the whole request, gone while it waits for its batch
            s = socket.create_connection(address(server))
            s.sendall(_head(content_type, len(body)) + body)
            socks.append(s)
        time.sleep(0.1)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            s.close()
        time.sleep(0.5)  # the abandoned inferences finish their batch
        if round_ == 0:
            # Pools start their threads lazily, up to their bound: a first round may add one legitimately.
            # A leak is growth from round to round.
            threads = threads_of(pid)

    _wait_for(lambda: open_fds(pid) <= fds, 10, f"file descriptors back to {fds} (now {open_fds(pid)})")
    assert threads_of(pid) <= threads, "worker threads keep being added, or are stuck"
    assert rss_bytes(pid) - rss < 20 * MIB
    started = time.perf_counter()
    assert good_burst(16) == [200] * 16  # every worker still serves
    assert time.perf_counter() - started < 5
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:4000]
    assert '"status":500' not in log  # a client that leaves is no server error (499 in the log)


# ---- overload at twice capacity ---------------------------------------------------------------------------

QUEUE = 8  # images: the capacity, one image per client
PHASE_S = 2.0


@dataclass
class Phase:
    started: float
    samples: list[tuple[float, int, float, str | None]] = field(default_factory=list)  # (t, status, s, retry)

    def latencies(self, status: int) -> np.ndarray:
        return np.asarray([s for _, st, s, _ in self.samples if st == status])

    def statuses(self) -> set[int]:
        return {st for _, st, _, _ in self.samples}


async def _post(client: httpx.AsyncClient, phase: Phase, png: bytes) -> int:
    t0 = time.perf_counter()
    r = await client.post("/classify", content=png, headers={"content-type": "image/png"})
    phase.samples.append(
        (t0 - phase.started, r.status_code, time.perf_counter() - t0, r.headers.get("retry-after"))
    )
    return r.status_code


async def closed_loop(url: str, png: bytes, clients: int, seconds: float) -> Phase:
    """`clients` clients, each sending its next request when the last is answered, for `seconds`."""
    phase = Phase(time.perf_counter())
    stop = phase.started + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def loop() -> None:
            while time.perf_counter() < stop:
                if await _post(client, phase, png) != 200:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(loop() for _ in range(clients)))
    return phase


async def open_loop(url: str, png: bytes, rate: float, seconds: float) -> Phase:
    """Requests sent at a fixed `rate` per second for `seconds`, whatever the answers (at most 64 open)."""
    phase = Phase(time.perf_counter())
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        tasks = []
        for i in range(int(rate * seconds)):
            delay = phase.started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(client, phase, png)))
        await asyncio.gather(*tasks)
    return phase


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99))


@dataclass
class Overload:
    at_capacity: list[Phase]
    overload: list[Phase]
    rate: float

    def latencies(self, phases: list[Phase], status: int) -> np.ndarray:
        return np.concatenate([p.latencies(status) for p in phases])

    @property
    def base(self) -> np.ndarray:
        return self.latencies(self.at_capacity, 200)

    @property
    def admitted(self) -> np.ndarray:
        return self.latencies(self.overload, 200)

    @property
    def rejected(self) -> np.ndarray:
        return self.latencies(self.overload, 503)

    def report(self) -> str:
        rejected = _p99(self.rejected) * 1e3 if len(self.rejected) else float("nan")
        return (
            f"capacity p99 {_p99(self.base) * 1e3:.1f} ms (n={len(self.base)}); at twice capacity "
            f"({2 * self.rate:.0f}/s) admitted p99 {_p99(self.admitted) * 1e3:.1f} ms (n={len(self.admitted)}), "
            f"503 p99 {rejected:.1f} ms (n={len(self.rejected)})"
        )

    def noisy(self) -> bool:
        """The machine's own noise exceeds what a 2x comparison can resolve: the capacity phases, under
        the same load, disagree by more than half, or the load average is over twice the cores."""
        p99s = [_p99(p.latencies(200)) for p in self.at_capacity]
        return max(p99s) > 1.5 * min(p99s) or os.getloadavg()[0] > 2 * (os.cpu_count() or 1)

    def latency_holds(self) -> bool:
        return (
            len(self.rejected) > 0
            and _p99(self.admitted) <= 2 * _p99(self.base)
            # a fast 503: answered without waiting for the queue, faster than the requests admitted
            and float(np.median(self.rejected)) < float(np.median(self.admitted))
            and _p99(self.rejected) < _p99(self.admitted)
        )


def _measure(url: str, png: bytes) -> Overload:
    # Capacity: what QUEUE closed-loop clients get through with nothing shed. Overload: requests sent at
    # twice that rate, open loop. Short alternating phases, so that the noise of a shared machine falls
    # on both alike.
    at_capacity: list[Phase] = []
    overload: list[Phase] = []
    for _ in range(3):
        at_capacity.append(asyncio.run(closed_loop(url, png, QUEUE, PHASE_S)))
        rate = len(at_capacity[-1].samples) / PHASE_S
        overload.append(asyncio.run(open_loop(url, png, 2 * rate, PHASE_S)))
    return Overload(at_capacity, overload, sum(len(p.samples) for p in at_capacity) / (3 * PHASE_S))


@pytest.mark.slow  # about 20 s of load: make test-long
def test_overload_at_twice_capacity(zoo: Zoo, serve: ServeFactory, fashion: FashionSample) -> None:
    # A default model whose convolutions take tens of milliseconds per image, so that inference, not HTTP,
    # is the bottleneck even at twice capacity on two shared cores, as with ImageNet-sized models on a
    # CPU; one inference thread; a queue of QUEUE images.
    registry = zoo.registry
    install_artifact(
        zoo,
        registry.default,
        slow_conv_model(registry.get(registry.default), channels=128, layers=20),
        "slow.onnx",
    )
    server: Server = serve(
        zoo,
        CONVZOO_MAX_QUEUE_SIZE=str(QUEUE),
        CONVZOO_MAX_BATCH_SIZE="4",
        CONVZOO_MAX_QUEUE_DELAY_US="0",
        CONVZOO_INFERENCE_THREADS="1",
        CONVZOO_LOG_LEVEL="warning",
    )
    _wait_for(lambda: httpx.get(server.url + "/health/ready").status_code == 200, 30, "readiness")
    png = fashion.png(0)
    asyncio.run(closed_loop(server.url, png, QUEUE, 1.0))  # warm-up
    runs = [_measure(server.url, png)]
    if not runs[0].latency_holds():  # timing on a shared machine: one more measurement before failing
        runs.append(_measure(server.url, png))
    recovery = asyncio.run(closed_loop(server.url, png, QUEUE, 3.0))
    reports = " | ".join(r.report() for r in runs)
    print(reports)
    for run in runs:
        assert all(p.statuses() == {200} for p in run.at_capacity), reports  # at capacity nothing is shed
        assert all(p.statuses() <= {200, 503} for p in run.overload), reports  # no other 5xx (nor 4xx)
        retries = [retry for p in run.overload for _, st, _, retry in p.samples if st == 503]
        assert all(retry is not None and int(retry) >= 1 for retry in retries)
    # recovery: back at capacity, every request is admitted again within a second
    late = [(t, st) for t, st, _, _ in recovery.samples if t > 1.0]
    assert late and all(st == 200 for _, st in late), [st for _, st in late if st != 200][:10]
    assert "Traceback" not in server.log()
    if not runs[-1].latency_holds() and all(r.noisy() for r in runs):
        pytest.skip(
            f"latencies not comparable on this loaded machine (load {os.getloadavg()[0]:.1f}): {reports}"
        )
    assert runs[-1].latency_holds(), reports
