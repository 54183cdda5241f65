"""Domain exceptions and the one table that maps them to HTTP problem details (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

log = logging.getLogger("convzoo.errors")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:convzoo:problem:"  # a stable identifier per problem kind


class ServiceError(Exception):
    """A failure with a safe, user-facing `detail`; the class decides the status."""

    def __init__(
        self, detail: str, *, retry_after_s: float | None = None, extensions: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.extensions = extensions  # extra members of the problem details body (RFC 9457, section 3.2)


class UnknownModel(ServiceError): ...


class ModelUnavailable(ServiceError): ...


class NotReady(ServiceError): ...


class Overloaded(ServiceError): ...


class DeadlineExceeded(ServiceError): ...


class BadImage(ServiceError): ...


class UnsupportedMediaType(ServiceError): ...


class PayloadTooLarge(ServiceError): ...


class ImageTooLarge(ServiceError): ...


class InvalidParameter(ServiceError): ...


class InferenceFailed(ServiceError): ...


class NoModelFits(ServiceError): ...


@dataclass(frozen=True)
class Problem:
    status: int
    slug: str
    title: str
    retry_after_s: float | None = None  # default Retry-After for 503s


# The one mapping of domain exceptions to statuses.
PROBLEMS: dict[type[ServiceError], Problem] = {
    UnknownModel: Problem(404, "unknown-model", "Unknown model"),
    ModelUnavailable: Problem(503, "model-unavailable", "Model unavailable", 30),
    NotReady: Problem(503, "not-ready", "Service not ready", 5),
    Overloaded: Problem(503, "overloaded", "Service overloaded", 1),
    DeadlineExceeded: Problem(503, "deadline-exceeded", "Request deadline exceeded", 1),
    BadImage: Problem(400, "bad-image", "Undecodable image"),
    UnsupportedMediaType: Problem(415, "unsupported-media-type", "Unsupported media type"),
    PayloadTooLarge: Problem(413, "payload-too-large", "Payload too large"),
    ImageTooLarge: Problem(413, "image-too-large", "Image too large"),
    InvalidParameter: Problem(422, "invalid-parameter", "Invalid parameter"),
    NoModelFits: Problem(422, "no-model-fits", "No model meets the constraints"),
    InferenceFailed: Problem(500, "inference-failed", "Inference failed"),
}


def problem_of(exc: ServiceError) -> Problem:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return Problem(500, "internal", "Internal error")


# Bodies for errors on other prefixes (e.g. /v2 uses {"error": ...}); a router registers its own renderer.
Renderer = Callable[[int, str, str, str], Response]


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in (extensions or {}).items() if k not in body})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _renderer_for(request: Request) -> Renderer | None:
    renderers: dict[str, Renderer] = getattr(request.app.state, "error_renderers", {})
    path = request.url.path
    for prefix, render in renderers.items():
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return render
    return None


def render_error(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    retry_after_s: float | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s is not None else None
    render = _renderer_for(request)
    if render is not None:
        response = render(status, slug, title, detail)
        if headers:
            response.headers.update(headers)
        return response
    return problem_response(status, slug, title, detail, headers=headers, extensions=extensions)


def register_error_renderer(app: FastAPI, prefix: str, render: Renderer) -> None:
    """Routes under `prefix` render errors with `render(status, slug, title, detail)` instead."""
    if not hasattr(app.state, "error_renderers"):
        app.state.error_renderers = {}
    app.state.error_renderers[prefix] = render


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    p = problem_of(exc)
    retry = exc.retry_after_s if exc.retry_after_s is not None else p.retry_after_s
    if p.status >= 500 and p.status != 503:
        log.error("%s on %s: %s", type(exc).__name__, request.url.path, exc.detail)
    retry = retry if p.status == 503 else None
    return render_error(request, p.status, p.slug, p.title, exc.detail, retry, exc.extensions)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return render_error(request, 422, "invalid-parameter", "Invalid parameter", _validation_detail(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) and status < 500 else title
    if status == 404 and detail == "Not Found":
        detail = f"No route {request.url.path}; see /docs for the API."
    elif status == 405 and detail == "Method Not Allowed":
        detail = f"Method {request.method} is not allowed on {request.url.path}."
    response = render_error(request, status, title.lower().replace(" ", "-"), title, detail)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client left before its body arrived: no server error. Nobody reads this answer; the request log
    # and metrics show 499, nginx's "client closed request".
    detail = "The client closed the connection before the request body was received."
    return render_error(request, 499, "client-closed-request", "Client closed request", detail)


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return render_error(request, 500, "internal", "Internal error", "An unexpected error occurred.")


Handler = Callable[[Request, Exception], Awaitable[Response]]


# The OpenAPI schema of a problem-details body; `extensions` members may follow the standard ones.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def _error_content(app: FastAPI, path: str) -> dict[str, Any]:
    renderers: dict[str, Renderer] = getattr(app.state, "error_renderers", {})
    for prefix, render in renderers.items():
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            media = render(400, "bad-request", "Bad Request", "").media_type or "application/json"
            return {media: {"schema": {"type": "object"}}}
    return {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _document_errors(app: FastAPI) -> None:
    # FastAPI documents its own 422 body only; the schema should say what the handlers above return.
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            for path, operations in schema.get("paths", {}).items():
                content = _error_content(app, path)
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    if "422" in responses:
                        responses["422"] = {"description": "Invalid parameter", "content": content}
                    responses.setdefault("default", {"description": "Any other error", "content": content})
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app returns goes through the table above, and the OpenAPI schema says so."""
    _document_errors(app)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unhandled)
