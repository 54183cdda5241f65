"""A front process's side of the link: inference by the service's models, calls into the service (its
models' state, loads, metrics), and the front's finished requests for the service's metrics."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import numpy as np

from service.core import errors
from service.core.errors import DeadlineExceeded, NotReady, ServiceError
from service.core.registry import Registry
from service.fronts import wire
from service.models.batcher import InferTimings
from service.monitor.signals import Seen
from service.rollouts import versions

# A front's finished requests reach the service's metrics at most this late, in one frame.
OBSERVE_EVERY_S = 0.05

# The service's errors by name, to raise in the front what the service raised.
_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, ServiceError)
}


def _link_down() -> NotReady:
    return NotReady("The service is restarting or shutting down; retry.", retry_after_s=1)


class _Protocol(asyncio.Protocol):
    def __init__(self, link: ModelLink) -> None:
        self.link = link
        self.reader = wire.Reader()

    def data_received(self, data: bytes) -> None:
        for f in self.reader.feed(data):
            self.link.settle(f)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost()


class ModelLink:
    """The service's models, over the link; labels from the registry, which both processes read."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._writer: wire.Writer | None = None  # while the link is up
        self._observed: list[tuple[str, str, int, float, str]] = []
        self._answers: list[Seen] = []

    async def connect(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), path)
        self._writer = wire.Writer(transport)  # (uvloop's transports are no asyncio.Transport subclasses)

    def close(self) -> None:
        self._flush_observed()
        if self._writer is not None:
            self._writer.flush()
            self._writer.transport.close()

    def labels(self, name: str) -> list[str]:
        return self.registry.labels_of(versions.split(name)[0])

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float
    ) -> tuple[np.ndarray, InferTimings]:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            raise _link_down()
        request_id = next(self._ids)
        future: asyncio.Future[tuple[np.ndarray, float, float, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[request_id] = future
        remaining = deadline - time.monotonic()
        try:
            # The canary's choice is the service's; the client's bucket goes with the request.
            client = versions.client_id.get()
            bucket = None if client is None else versions.bucket(client)
            writer.write(wire.infer(request_id, name, batch, remaining, bucket))
            # The service answers a passed deadline itself; this covers a service that stalls.
            async with asyncio.timeout(max(remaining, 0.0) + 1.0):
                logits, queue_ms, inference_ms, version = await future
        except TimeoutError:
            raise DeadlineExceeded("The request's deadline passed before inference completed.") from None
        finally:
            self._waiting.pop(request_id, None)
        return logits, InferTimings(
            queue_ms=queue_ms, inference_ms=inference_ms, batch_sizes=(len(batch),), version=version or None
        )

    async def call(self, method: str, timeout_s: float, **args: Any) -> dict[str, Any]:
        """One call into the service (service/fronts/link_server.py, `CALLS`); its errors are raised here."""
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            raise _link_down()
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            writer.write(wire.json_frame(wire.CALL, request_id, {"method": method, "args": args}))
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise DeadlineExceeded(f"The service did not answer ({method}) in time.") from None
        finally:
            self._waiting.pop(request_id, None)

    def observe(self, *, route: str, model: str, status: int, seconds: float, client: str = "") -> None:
        """A finished request, for the service's metrics: sent with others every OBSERVE_EVERY_S; `client`
        is the key id that made it ("" without keys)."""
        if not self._observed and not self._answers:
            asyncio.get_running_loop().call_later(OBSERVE_EVERY_S, self._flush_observed)
        self._observed.append((route, model, status, seconds, client))

    def observe_answers(self, rows: list[Seen]) -> None:
        """Answered images, for the service's monitor: sent with the finished requests."""
        if not self._observed and not self._answers:
            asyncio.get_running_loop().call_later(OBSERVE_EVERY_S, self._flush_observed)
        self._answers.extend(rows)

    def _flush_observed(self) -> None:
        observed, self._observed = self._observed, []
        answers, self._answers = self._answers, []
        if (observed or answers) and self._writer is not None:
            body: dict[str, Any] = {"requests": observed}
            if answers:
                body["answers"] = answers
            self._writer.write(wire.json_frame(wire.OBSERVE, 0, body))

    def settle(self, f: wire.Frame) -> None:
        future = self._waiting.get(f.id)
        if future is None or future.done():
            return  # its request gave up (its client left)
        if f.kind == wire.RESULT:
            future.set_result(wire.read_result(f.payload))
        elif f.kind == wire.REPLY:
            future.set_result(wire.read_json(f.payload))
        elif f.kind == wire.ERROR:
            body = wire.read_json(f.payload)
            cls = _ERRORS.get(str(body.get("error")), ServiceError)
            detail, retry = str(body.get("detail")), body.get("retry_after_s")
            future.set_exception(cls(detail, retry_after_s=retry, extensions=body.get("extensions")))

    def lost(self) -> None:
        self._writer = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(_link_down())
