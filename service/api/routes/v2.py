"""The Open Inference Protocol (KServe V2 / Triton HTTP) under `/v2`; errors are `{"error": "..."}`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from service.api.deps import ManagerDep, PreprocessPoolDep, SettingsDep
from service.manager import ModelManager
from service.settings import Settings
from service.v2 import handlers
from service.v2.codec import HEADER_LENGTH
from service.v2.errors import V2Error
from service.v2.statistics import Statistics

PREFIX = "/v2"
# The protocol's error statuses: what the rest of the service answers 413/415/422 is a bad request here.
_AS_BAD_REQUEST = {413, 415, 422}


RETRY_AFTER_S = 5  # for the 503s raised here (not ready); the service's own 503s carry their own


def error_response(status: int, message: str) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def render_error(status: int, slug: str, title: str, detail: str) -> Response:
    """The renderer of the service's own errors (unknown route, overload, ...) under `/v2`."""
    return error_response(400 if status in _AS_BAD_REQUEST else status, detail)


class _V2Route(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except V2Error as exc:
                return error_response(exc.status, exc.message)

        return handle


router = APIRouter(prefix=PREFIX, tags=["v2 (Open Inference Protocol)"], route_class=_V2Route)


def _statistics(request: Request) -> Statistics:
    stats: Statistics = request.app.state.v2_statistics
    return stats


def _json(content: object) -> Response:
    return JSONResponse(content)


# --- server -----------------------------------------------------------------------------------------------


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    return _json(handlers.server_metadata(request.app.version))


@router.get("/health/live", summary="Server live", response_class=Response)
async def server_live() -> Response:
    return Response(status_code=200)


@router.get(
    "/health/ready", summary="Server ready: the default model is loaded and warmed up", response_class=Response
)
async def server_ready(manager: ManagerDep) -> Response:
    ok, reason = manager.ready()
    if not ok:
        raise V2Error(503, reason)
    return Response(status_code=200)


# --- statistics (before /models/{name}, which would take "stats" as a name) --------------------------------


@router.get("/models/stats", summary="Statistics of every model")
async def all_stats(request: Request, manager: ManagerDep) -> Response:
    return _json(handlers.statistics(manager, _statistics(request)))


@router.get("/models/{name}/stats", summary="Statistics of a model")
async def model_stats(request: Request, name: str, manager: ManagerDep) -> Response:
    return _json(handlers.statistics(manager, _statistics(request), name))


@router.get("/models/{name}/versions/{version}/stats", summary="Statistics of a model version")
async def version_stats(request: Request, name: str, version: str, manager: ManagerDep) -> Response:
    return _json(handlers.statistics(manager, _statistics(request), name, version))


# --- models -----------------------------------------------------------------------------------------------


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, manager: ManagerDep) -> Response:
    return _json(handlers.model_metadata(handlers.resolve(manager, name)))


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def version_metadata(name: str, version: str, manager: ManagerDep) -> Response:
    return _json(handlers.model_metadata(handlers.resolve(manager, name, version)))


@router.get("/models/{name}/config", summary="Model configuration (Triton's)")
async def model_config(name: str, manager: ManagerDep) -> Response:
    return _json(handlers.model_config(manager, handlers.resolve(manager, name)))


@router.get("/models/{name}/versions/{version}/config", summary="Model version configuration (Triton's)")
async def version_config(name: str, version: str, manager: ManagerDep) -> Response:
    return _json(handlers.model_config(manager, handlers.resolve(manager, name, version)))


@router.get("/models/{name}/ready", summary="Model ready")
async def model_ready(name: str, manager: ManagerDep) -> Response:
    handlers.model_ready(handlers.resolve(manager, name))
    return Response(status_code=200)


@router.get("/models/{name}/versions/{version}/ready", summary="Model version ready")
async def version_ready(name: str, version: str, manager: ManagerDep) -> Response:
    handlers.model_ready(handlers.resolve(manager, name, version))
    return Response(status_code=200)


async def _infer(
    request: Request,
    manager: ModelManager,
    settings: Settings,
    pool: ThreadPoolExecutor,
    name: str,
    version: str | None,
) -> Response:
    state = handlers.resolve(manager, name, version)
    request.state.model = state.entry.name
    body = handlers.read_body(
        await request.body(), request.headers.get("content-encoding"), settings.max_upload_bytes
    )
    answer = await handlers.infer(
        manager,
        state,
        body,
        request.headers.get(HEADER_LENGTH),
        timeout_s=settings.request_timeout_s,
        max_images=settings.max_queue_size,
        pool=pool,
    )
    request.state.timings = {"queue": answer.timings.queue_ms, "inference": answer.timings.inference_ms}
    headers: dict[str, str] = {}
    if answer.header_length is not None:
        # The length of the JSON part before compression, as the binary data extension reads it.
        headers[HEADER_LENGTH] = str(answer.header_length)
    payload, encoding = handlers.compress(answer.body, request.headers.get("accept-encoding"))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    media = "application/json" if answer.header_length is None else "application/octet-stream"
    return Response(payload, media_type=media, headers=headers)


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor data)")
async def model_infer(
    request: Request, name: str, manager: ManagerDep, settings: SettingsDep, pool: PreprocessPoolDep
) -> Response:
    return await _infer(request, manager, settings, pool, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on a model version")
async def version_infer(
    request: Request, name: str, version: str, manager: ManagerDep, settings: SettingsDep, pool: PreprocessPoolDep
) -> Response:
    return await _infer(request, manager, settings, pool, name, version)


# --- model repository (read-only) -------------------------------------------------------------------------


@router.post("/repository/index", summary="The registry's models and their states (read-only)")
async def repository_index(request: Request, manager: ManagerDep) -> Response:
    return _json(handlers.repository_index(manager, await request.body()))


@router.post("/repository/models/{name}/load", summary="Refused: models come from the registry only")
async def repository_load(name: str, manager: ManagerDep) -> Response:
    raise handlers.refuse_model_control(manager, name)


@router.post("/repository/models/{name}/unload", summary="Refused: models come from the registry only")
async def repository_unload(name: str, manager: ManagerDep) -> Response:
    raise handlers.refuse_model_control(manager, name)
