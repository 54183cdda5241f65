"""The Open Inference Protocol (KServe V2 / Triton HTTP): its own app, mounted at `/v2`, with its own
error body (`{"error": "..."}`, service.v2.errors) and its own OpenAPI at /v2/openapi.json."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Receive, Scope, Send

from service.access.auth import CLIENT_STATE
from service.api.deps import InferenceDep, ServicesDep
from service.core.errors import ORIGINAL_PATH, document_errors, install_error_handlers
from service.rollouts import versions
from service.services import Services
from service.v2 import handlers
from service.v2.codec import HEADER_LENGTH
from service.v2.errors import ERROR_CONTENT, error_body, unavailable
from service.v2.schemas import (
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    ModelStatistics,
    RepositoryModel,
    ServerMetadata,
)

PREFIX = "/v2"
_EMPTY: dict[int | str, dict[str, Any]] = {
    200: {"description": "Yes: an empty body"}
}  # readiness and liveness answer with the status only

router = APIRouter(tags=["v2 (Open Inference Protocol)"])


# --- server -----------------------------------------------------------------------------------------------


@router.get("/", summary="Server metadata")  # GET /v2: V2Mount passes it as /v2/
async def server_metadata(request: Request) -> ServerMetadata:
    return handlers.server_metadata(request.app.version)


@router.get("/health/live", summary="Server live", response_class=Response, responses=_EMPTY)
async def server_live() -> Response:
    return Response(status_code=200)


@router.get(
    "/health/ready",
    summary="Server ready: the default model is loaded and warmed up",
    response_class=Response,
    responses=_EMPTY,
)
async def server_ready(services: ServicesDep) -> Response:
    ok, reason = services.manager.ready()
    if not ok:
        raise unavailable(reason)
    return Response(status_code=200)


# --- statistics (before /models/{name}, which would take "stats" as a name) --------------------------------


@router.get("/models/stats", summary="Statistics of every model")
async def all_stats(services: ServicesDep) -> ModelStatistics:
    return handlers.statistics(services.manager, services.statistics)


@router.get("/models/{name}/stats", summary="Statistics of a model")
async def model_stats(name: str, services: ServicesDep) -> ModelStatistics:
    return handlers.statistics(services.manager, services.statistics, name)


@router.get("/models/{name}/versions/{version}/stats", summary="Statistics of a model version")
async def version_stats(name: str, version: str, services: ServicesDep) -> ModelStatistics:
    return handlers.statistics(services.manager, services.statistics, name, version)


# --- models -----------------------------------------------------------------------------------------------


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, services: ServicesDep) -> ModelMetadata:
    return handlers.model_metadata(handlers.resolve(services.manager, name))


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def version_metadata(name: str, version: str, services: ServicesDep) -> ModelMetadata:
    return handlers.model_metadata(handlers.resolve(services.manager, name, version))


@router.get("/models/{name}/config", summary="Model configuration (Triton's)")
async def model_config(name: str, services: ServicesDep) -> ModelConfig:
    return handlers.model_config(handlers.resolve(services.manager, name))


@router.get("/models/{name}/versions/{version}/config", summary="Model version configuration (Triton's)")
async def version_config(name: str, version: str, services: ServicesDep) -> ModelConfig:
    return handlers.model_config(handlers.resolve(services.manager, name, version))


@router.get("/models/{name}/ready", summary="Model ready", response_class=Response, responses=_EMPTY)
async def model_ready(name: str, services: ServicesDep) -> Response:
    handlers.model_ready(handlers.resolve(services.manager, name))
    return Response(status_code=200)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model version ready",
    response_class=Response,
    responses=_EMPTY,
)
async def version_ready(name: str, version: str, services: ServicesDep) -> Response:
    handlers.model_ready(handlers.resolve(services.manager, name, version))
    return Response(status_code=200)


async def _infer(request: Request, services: Services, name: str, version: str | None) -> Response:
    manager, settings = services.manager, services.settings
    await manager.learn(versions.joined(name, version))
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
        pool=services.preprocess_pool,
        watch=services.monitor,
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


# The body is written by the codec (JSON, or JSON then binary tensors): documented, not validated twice.
_INFERENCE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/models/{name}/infer",
    summary="Inference (JSON or binary tensor data)",
    response_class=Response,
    responses=_INFERENCE,
)
async def model_infer(request: Request, name: str, services: InferenceDep) -> Response:
    return await _infer(request, services, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on a model version",
    response_class=Response,
    responses=_INFERENCE,
)
async def version_infer(request: Request, name: str, version: str, services: InferenceDep) -> Response:
    return await _infer(request, services, name, version)


# --- model repository (load and unload with an admin key: docs/auth.md) -------------------------------------------------------------------------


@router.post(
    "/repository/index",
    summary="The registry's models and their states (read-only)",
    response_model_exclude_unset=True,  # `reason` only where there is one
)
async def repository_index(request: Request, services: ServicesDep) -> list[RepositoryModel]:
    return handlers.repository_index(services.manager, await request.body())


_CONTROL: dict[int | str, dict[str, Any]] = {
    200: {"description": "Done (with an admin key; without API keys the answer is 400)"}
}


def _admin(request: Request) -> bool:
    # With API keys on, service/access/auth.py's Guard let this request through with the admin scope and named
    # its key; without keys, no request may control the models.
    return bool(request.scope.get("state", {}).get(CLIENT_STATE))


@router.post(
    "/repository/models/{name}/load",
    summary="Load a model (an admin key; refused without API keys: models load on first use)",
    response_class=Response,
    responses=_CONTROL,
)
async def repository_load(request: Request, name: str, services: ServicesDep) -> Response:
    await handlers.control_model(services.manager, name, "load", admin=_admin(request))
    return Response(status_code=200)


@router.post(
    "/repository/models/{name}/unload",
    summary="Unload a model (an admin key; refused without API keys)",
    response_class=Response,
    responses=_CONTROL,
)
async def repository_unload(request: Request, name: str, services: ServicesDep) -> Response:
    await handlers.control_model(services.manager, name, "unload", admin=_admin(request))
    return Response(status_code=200)


def create_v2_app(version: str) -> FastAPI:
    """The /v2 app; its routes get the Services from the lifespan state the parent app's server passes."""
    app = FastAPI(
        title="convzoo: Open Inference Protocol (v2)",
        summary='KServe V2 / Triton HTTP; errors are {"error": "..."}',
        version=version,
    )
    install_error_handlers(app, error_body)
    app.include_router(router)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            body = InferenceResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["InferenceResponse"] = body
            document_errors(schema, ERROR_CONTENT)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class V2Mount(Mount):
    """The /v2 mount. It also takes `/v2` itself (the protocol's server metadata), which a plain Mount
    redirects to `/v2/`: the app sees `/v2/`, and the request keeps its path for the request log."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(PREFIX, app=app)

    def _is_root(self, scope: Scope) -> bool:
        return bool(scope["type"] == "http" and scope.get("path") == scope.get("root_path", "") + PREFIX)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self._is_root(scope):
            match, child = super().matches({**scope, "path": scope["path"] + "/"})
            return match, {**child, "path": scope["path"] + "/", ORIGINAL_PATH: scope["path"]}
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        try:
            await super().handle(scope, receive, send)
        finally:
            scope["path"] = path
