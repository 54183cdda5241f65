"""The service's side of the front processes' link: their inference requests into the model manager (so
batches, queues, deadlines and the memory budget stay one), their calls (the models' state, loads, the
metrics' exposition), and their finished requests into the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from service.core.errors import ServiceError
from service.fronts import mirror, wire
from service.monitor.signals import Seen
from service.services import Services

log = logging.getLogger("convzoo.fronts")


class Routing(Protocol):
    """What the link needs of the model manager beyond `Models`: a request's version, then its inference."""

    def route(self, name: str, bucket: int | None = None) -> tuple[str, str | None]: ...

    async def run(
        self, key: str, batch: np.ndarray, *, deadline: float, followed: str | None = None
    ) -> tuple[np.ndarray, Any]: ...


def error_frame(request_id: int, exc: ServiceError) -> bytes:
    body = {
        "error": type(exc).__name__,
        "detail": exc.detail,
        "retry_after_s": exc.retry_after_s,
        "extensions": exc.extensions,
    }
    return wire.json_frame(wire.ERROR, request_id, body)


async def _snapshot(services: Services, *, generation: int | None = None) -> dict[str, Any]:
    return mirror.snapshot(services.manager, services.statistics, services.recent, generation)


async def _ensure_loaded(services: Services, *, name: str) -> dict[str, Any]:
    await services.manager.ensure_loaded(name)
    return {}


async def _unload(services: Services, *, name: str) -> dict[str, Any]:
    return {"unloaded": await services.manager.unload_model(name)}


async def _rollout(services: Services, *, name: str) -> dict[str, Any]:
    return await services.manager.rollout(name)


async def _reload(services: Services) -> dict[str, Any]:
    return await services.manager.reload()


async def _metrics(services: Services) -> dict[str, Any]:
    return {"text": (await services.exposition()).decode()}


async def _monitor(services: Services, *, name: str) -> dict[str, Any]:
    return await services.monitor.report(services.manager.entry(name))


async def _monitor_capture(services: Services, *, name: str, samples: int) -> dict[str, Any]:
    return await services.monitor.capture(services.manager.entry(name), int(samples))


# What a front may call, by name: each takes the services and the call's arguments.
CALLS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "snapshot": _snapshot,
    "ensure_loaded": _ensure_loaded,
    "unload": _unload,
    "metrics": _metrics,
    "monitor": _monitor,
    "monitor_capture": _monitor_capture,
    "rollout": _rollout,
    "reload": _reload,
}


class _Link(asyncio.Protocol):
    """One front process's connection."""

    def __init__(self, services: Services, tasks: set[asyncio.Task[None]]) -> None:
        self.services = services
        self.tasks = tasks
        self.reader = wire.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.writer = wire.Writer(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except ValueError:
            log.exception("a front process sent a malformed frame; its link is closed")
            if self.transport is not None:
                self.transport.close()
            return
        groups: dict[tuple[str, str | None], list[tuple[int, float, np.ndarray]]] = {}
        for f in frames:
            if f.kind == wire.INFER:
                try:
                    name, remaining_s, bucket, batch = wire.read_infer(f.payload)
                except (ValueError, UnicodeDecodeError, IndexError, struct.error):
                    log.exception("a front process sent a malformed request")
                    self.writer.write(error_frame(f.id, ServiceError("A malformed request.")))
                    continue
                try:  # the version that answers: pinned, or chosen by the model's policy for this client
                    route = cast(Routing, self.services.manager).route(name, bucket)
                except ServiceError as exc:
                    self.writer.write(error_frame(f.id, exc))
                    continue
                groups.setdefault(route, []).append((f.id, remaining_s, batch))
            elif f.kind == wire.OBSERVE:
                self._observe(f.payload)
            elif f.kind == wire.CALL:
                self._spawn(self._call(f.id, f.payload))
        # The requests of one read go to their model's batcher together: one wait, not one per request.
        for (key, followed), requests in groups.items():
            self._spawn(self._infer(key, followed, requests))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _call(self, request_id: int, payload: memoryview) -> None:
        try:
            body = wire.read_json(payload)
            method = CALLS[str(body["method"])]
            answer = await method(self.services, **dict(body.get("args") or {}))
        except ServiceError as exc:
            self.writer.write(error_frame(request_id, exc))
        except Exception:
            log.exception("a front process's call failed")
            self.writer.write(error_frame(request_id, ServiceError("An unexpected error occurred.")))
        else:
            self.writer.write(wire.json_frame(wire.REPLY, request_id, answer))

    def _observe(self, payload: memoryview) -> None:
        try:
            body = wire.read_json(payload)
            for route, model, status, seconds, *client in body["requests"]:
                self.services.metrics.observe_request(
                    route=str(route),
                    model=str(model),
                    status=int(status),
                    seconds=float(seconds),
                    client=str(client[0]) if client else "",
                )
            if "answers" in body:  # answered images, for the monitor (service/monitor/live.py)
                self.services.monitor.observe([Seen(*row) for row in body["answers"]])
        except Exception:
            log.exception("recording a front process's request metrics failed")

    async def _infer(
        self, key: str, followed: str | None, requests: list[tuple[int, float, np.ndarray]]
    ) -> None:
        try:
            batch = requests[0][2] if len(requests) == 1 else np.concatenate([r[2] for r in requests])
            deadline = time.monotonic() + min(r[1] for r in requests)
            # No span here: the front's trace has the batch, with the queue and inference measured here and sent
            # back (a span made here would start a trace of its own, with no request in it).
            logits, timings = await cast(Routing, self.services.manager).run(
                key, batch, deadline=deadline, followed=followed
            )
            at = 0
            for request_id, _, part in requests:
                rows = logits[at : at + len(part)]
                at += len(part)
                self.writer.write(
                    wire.result(
                        request_id, rows, timings.queue_ms, timings.inference_ms, timings.version or ""
                    )
                )
        except ServiceError as exc:
            for request_id, _, _ in requests:
                self.writer.write(error_frame(request_id, exc))
        except Exception:
            log.exception("inference for a front process failed")
            for request_id, _, _ in requests:
                self.writer.write(error_frame(request_id, ServiceError("An unexpected error occurred.")))


class LinkServer:
    """A Unix socket at `path` for the front processes, answered on the service's event loop."""

    def __init__(self, services: Services, path: Path) -> None:
        self.services = services
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _Link(self.services, self._tasks), str(self.path)
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(OSError):
            self.path.unlink()
