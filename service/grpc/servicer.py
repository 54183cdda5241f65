"""`inference.GRPCInferenceService` on top of the same manager, statistics and `/v2` handlers as REST.

Every method answers from the `/v2` handlers' dictionaries (parsed into the protocol's messages), so
REST and gRPC cannot drift apart. Errors keep the REST status they would have had, mapped to a gRPC
code by `code_of`; each call is logged and counted like an HTTP request, with that status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from pydantic import BaseModel
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.access.auth import Access, Caller, Need, Refused, secret_of
from service.access.keys import Scope as KeyScope
from service.core.errors import DeadlineExceeded, ServiceError, problem_of
from service.core.settings import Settings
from service.grpc import tensors
from service.interfaces import Models, ModelStatistics
from service.monitor.watch import Watch
from service.rollouts import versions
from service.telemetry import tracing
from service.telemetry.metrics import Metrics
from service.v2 import datatypes, handlers
from service.v2.errors import V2Error

SERVICE = "inference.GRPCInferenceService"
access_log = logging.getLogger("convzoo.access")

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,  # a model not built: the system is not in the state to run it
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}

Reply = TypeVar("Reply")


# A status message travels in the trailing metadata, whose size the client limits (8 KiB by default):
# a message quoting a 20 KB model name exceeded it and the client saw no status at all.
MAX_MESSAGE = 1024


class Failure(Exception):
    """An error answer: the REST status it stands for, and the gRPC code and message sent."""

    def __init__(self, status: int, code: grpc.StatusCode, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def failure_of(exc: Exception) -> Failure:
    """The one mapping of the service's errors to gRPC status codes."""
    if isinstance(exc, V2Error):
        return Failure(exc.status, _CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
    if isinstance(exc, DeadlineExceeded):
        return Failure(503, grpc.StatusCode.DEADLINE_EXCEEDED, exc.detail)  # 503 on REST too
    if isinstance(exc, ServiceError):
        status = problem_of(exc).status
        return Failure(status, _CODES.get(status, grpc.StatusCode.INTERNAL), exc.detail)
    return Failure(500, grpc.StatusCode.INTERNAL, "internal error")


# The calls that read the models' state (not inference, which the service itself checks).
READS_STATE = frozenset(
    {
        "ServerReady",
        "ModelReady",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
)


# What a call needs of its key (service/access/auth.py): the probes are open, inference needs `infer`, the
# repository extension `admin`, the rest `read`.
_OPEN = frozenset({"ServerLive", "ServerReady"})
_NEEDS: dict[str, KeyScope] = {
    "ModelInfer": "infer",
    "RepositoryIndex": "admin",
    "RepositoryModelLoad": "admin",
    "RepositoryModelUnload": "admin",
}


def need_of(method: str, model: str) -> Need:
    if method in _OPEN:
        return Need(None)
    return Need(_NEEDS.get(method, "read"), (model,) if model else ())


def _source(context: grpc.aio.ServicerContext) -> str:
    """The client's address without its port: `ipv4:10.0.0.1:5123` -> `ipv4:10.0.0.1`."""
    peer = str(context.peer() or "")
    return peer.rsplit(":", 1)[0] if peer.count(":") > 1 else peer


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        manager: Models,
        settings: Settings,
        statistics: ModelStatistics,
        metrics: Metrics,
        version: str,
        pool: Executor | None,
        access: Access | None = None,
        watch: Watch | None = None,
    ) -> None:
        self.manager = manager
        self.settings = settings
        self.statistics = statistics
        self.metrics = metrics
        self.version = version
        self.pool = pool
        self.access = access
        self.watch = watch  # the monitor (service/monitor/): answers counted as REST's are

    # --- the calls' common frame: request id, error mapping, log line, metrics --------------------------

    async def _serve(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        model: str,
        answer: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        rid = _request_id(context)
        client = _client_id(context)
        token = versions.client_id.set(client) if client is not None else None
        try:
            return await self._traced(method, context, model, rid, answer)
        finally:
            if token is not None:
                versions.client_id.reset(token)

    async def _traced(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        model: str,
        rid: str,
        answer: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        if not tracing.enabled():
            return await self._answer(method, context, model, rid, answer)
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}
        with tracing.server_span("receive", metadata, attributes):
            return await self._answer(method, context, model, rid, answer)

    async def _answer(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        model: str,
        rid: str,
        answer: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        started = time.perf_counter()
        trailing: list[tuple[str, str]] = [("x-request-id", rid)]
        client = ""
        try:
            caller = self._admit(method, context, model)
            client = caller.key.id if caller is not None else ""
            with contextlib.nullcontext() if self.access is None else self.access.serving(caller):
                if method in READS_STATE:  # a front asks the service for its models' state first
                    await self.manager.refresh()
                reply = await answer()
        except Exception as exc:  # every error becomes a status; unexpected ones are logged
            if isinstance(exc, Refused):
                trailing += [(k.lower(), v) for k, v in exc.headers.items()]
                client = exc.key_id
                exc = exc.error
            failure = failure_of(exc)
            if isinstance(exc, ServiceError) and exc.retry_after_s is not None and failure.status == 429:
                trailing.append(("retry-after", str(max(1, round(exc.retry_after_s)))))
            if failure.code == grpc.StatusCode.INTERNAL:
                logging.getLogger("convzoo").exception("gRPC %s failed", method)
            # The traceback's frames hold the call's arrays (a decoded message's tensors): freed now.
            traceback.clear_frames(exc.__traceback__)
            del exc
        else:
            self._record(rid, method, model, 200, time.perf_counter() - started, client)
            return reply
        self._record(rid, method, model, failure.status, time.perf_counter() - started, client)
        tracing.mark_failed(failure.code.name, failure.message)
        context.set_trailing_metadata(tuple(trailing))
        # The status is set, not raised: `context.abort` raises an AbortError that gRPC keeps in a
        # reference cycle with this call's frames, the request message among them, so that every failed
        # call's message (up to the upload limit) stayed in memory until a full collection (RSS rose about
        # 12 MB a call for 8 MB messages). gRPC discards the reply of a call whose code is not OK.
        context.set_code(failure.code)
        context.set_details(failure.message)
        return None  # type: ignore[return-value]

    def _admit(self, method: str, context: grpc.aio.ServicerContext, model: str) -> Caller | None:
        """The call's caller, or Refused (service/access/auth.py); None for an open call or without keys."""
        if self.access is None:
            return None
        metadata = [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        caller = self.access.admit(secret_of(metadata), need_of(method, model), _source(context))
        if caller is not None:
            tracing.annotate(client=caller.key.id)
        return caller

    def _record(
        self, rid: str, method: str, model: str, status: int, seconds: float, client: str = ""
    ) -> None:
        route = f"/{SERVICE}/{method}"
        # Only registry names become labels: a client cannot create metric series.
        model = model if model in {m.name for m in self.manager.registry.models} else ""
        level = logging.ERROR if status >= 500 and status != 503 else logging.INFO
        access_log.log(
            level,
            "GRPC %s %d",
            route,
            status,
            extra={
                "request_id": rid,
                "method": "GRPC",
                "path": route,
                "route": route,
                "model": model or None,
                "status": status,
                "duration_ms": round(seconds * 1e3, 3),
                **({"client": client} if client else {}),
            },
        )
        self.metrics.observe_request(route=route, model=model, status=status, seconds=seconds, client=client)

    # --- server -----------------------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return pb.ServerLiveResponse(live=True)

        return await self._serve("ServerLive", context, "", answer)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return pb.ServerReadyResponse(ready=self.manager.ready()[0])

        return await self._serve("ServerReady", context, "", answer)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return _parse(handlers.server_metadata(self.version), pb.ServerMetadataResponse())

        return await self._serve("ServerMetadata", context, "", answer)

    # --- models -----------------------------------------------------------------------------------------

    def _resolve(self, name: str, version: str) -> Any:
        return handlers.resolve(self.manager, name, version or None)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            state = self._resolve(request.name, request.version)
            return pb.ModelReadyResponse(ready=state.status == "loaded")

        return await self._serve("ModelReady", context, request.name, answer)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            state = self._resolve(request.name, request.version)
            return _parse(handlers.model_metadata(state), pb.ModelMetadataResponse())

        return await self._serve("ModelMetadata", context, request.name, answer)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            state = self._resolve(request.name, request.version)
            config = handlers.model_config(state)
            return _parse({"config": config}, pb.ModelConfigResponse())

        return await self._serve("ModelConfig", context, request.name, answer)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            name = request.name or None
            stats = handlers.statistics(self.manager, self.statistics, name, request.version or None)
            return _parse(stats, pb.ModelStatisticsResponse())

        return await self._serve("ModelStatistics", context, request.name, answer)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            await self.manager.learn(versions.joined(request.model_name, request.model_version))
            state = self._resolve(request.model_name, request.model_version)
            # The model's datatype is known: an input of another is refused before its data is read.
            decode = functools.partial(
                tracing.traced("decode", tensors.decode),
                datatype=datatypes.from_registry_dtype(state.entry.input.dtype),
            )
            if tensors.size_hint(request) > handlers.OFF_LOOP_BYTES:  # as on REST: large ones off the loop
                decoded = await asyncio.get_running_loop().run_in_executor(self.pool, decode, request)
            else:
                decoded = decode(request)
            outputs, timings = await handlers.run(
                self.manager,
                state,
                decoded,
                timeout_s=self._timeout(context),
                max_images=self.settings.max_queue_size,
                watch=self.watch,
            )
            entry = state.entry
            return tracing.traced("encode", tensors.encode)(
                model_name=versions.split(entry.name)[0],
                model_version=timings.version or entry.version,
                request_id=decoded.id,
                outputs=outputs,
            )

        return await self._serve("ModelInfer", context, request.model_name, answer)

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        """The service's request timeout, or the client's deadline when that comes first."""
        remaining = context.time_remaining()
        limit = self.settings.request_timeout_s
        return limit if remaining is None else max(0.0, min(limit, remaining))

    # --- model repository (load and unload with an admin key) -------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            body = json.dumps({"ready": request.ready}).encode()
            return _parse(
                {"models": handlers.repository_index(self.manager, body)}, pb.RepositoryIndexResponse()
            )

        return await self._serve("RepositoryIndex", context, "", answer)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            await handlers.control_model(
                self.manager, request.model_name, "load", admin=self.access is not None
            )
            return pb.RepositoryModelLoadResponse()

        return await self._serve("RepositoryModelLoad", context, request.model_name, answer)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def answer() -> Any:
            await handlers.control_model(
                self.manager, request.model_name, "unload", admin=self.access is not None
            )
            return pb.RepositoryModelUnloadResponse()

        return await self._serve("RepositoryModelUnload", context, request.model_name, answer)


# Shared memory, streaming, trace and log settings: not offered (the server metadata lists no such extension).
UNSUPPORTED = (
    "ModelStreamInfer",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)


def _unsupported(method: str) -> Callable[..., Awaitable[Any]]:
    async def refuse(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported by this server")

    return refuse


for _method in UNSUPPORTED:
    setattr(InferenceServicer, _method, _unsupported(_method))


def _parse(content: BaseModel | dict[str, Any], message: Any) -> Any:
    """A REST response body (the /v2 handlers' models) as the gRPC message; absent fields take defaults."""
    return json_format.ParseDict(_plain(content), message, ignore_unknown_fields=False)


def _plain(content: object) -> Any:
    if isinstance(content, BaseModel):
        return content.model_dump(mode="json", exclude_none=True)
    if isinstance(content, dict):
        return {k: _plain(v) for k, v in content.items()}
    if isinstance(content, list):
        return [_plain(v) for v in content]
    return content


def _client_id(context: grpc.aio.ServicerContext) -> str | None:
    """The client's id for a canary's choice: `x-client-id` metadata, else its API key, as over HTTP."""
    found = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    for header in versions.CLIENT_HEADERS:
        value = found.get(header.decode())
        if value:
            return value
    return None


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            return value
    return uuid.uuid4().hex
