"""Domain exceptions and the one table that maps them to HTTP problem details (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from service.core.catalog import Entry, closest

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


def unknown_model(name: str, known: Iterable[str] = ()) -> UnknownModel:
    """The error of a model name the registry does not have (a 404), with the closest of the `known` names
    in its detail and as the member `did_you_mean`."""
    guess = closest(name, known)
    if guess is None:
        return UnknownModel(f"Unknown model {name!r}; GET /models lists the models.")
    return UnknownModel(
        f"Unknown model {name!r}; did you mean {guess!r}? GET /models lists the models.",
        extensions={"did_you_mean": guess},
    )


class ModelUnavailable(ServiceError): ...


class ModelNotBuilt(ModelUnavailable):
    """A registry model whose artifact is not there: the detail and the member `build_command` say how to
    make it."""


def unavailable_error(state: Entry) -> ModelUnavailable:
    """The error of a request for a model that is unavailable: ModelNotBuilt (409, with the command that
    builds it) when its artifact is not there, else ModelUnavailable (503)."""
    name = state.entry.name
    if state.build_command is not None:
        return ModelNotBuilt(
            f"Model {name}: {state.reason}.",
            extensions={"model": name, "build_command": state.build_command},
        )
    return ModelUnavailable(f"Model {name} is unavailable: {state.reason}.")


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


# Who is calling (service/access/auth.py): no valid key, a key without the right, a key over its quota.
class Unauthenticated(ServiceError): ...


class Forbidden(ServiceError): ...


class RateLimited(ServiceError): ...


# The Open Inference Protocol's own errors, raised by the /v2 routes and answered as {"error": "..."}.
class V2Error(ServiceError):
    """A request the protocol answers with its status (400, 404 or 503) and `message`."""

    @property
    def status(self) -> int:
        return problem_of(self).status

    @property
    def message(self) -> str:
        return self.detail


class V2BadRequest(V2Error): ...


class V2NotFound(V2Error): ...


class V2Unavailable(V2Error): ...


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
    # 409 Conflict: the model exists (not a 404), but its state, no artifact, conflicts with the request
    # until someone builds it; no Retry-After, as retrying changes nothing (a 503 made clients retry for
    # ever). Not 501: that says the server lacks the method, for every resource.
    ModelNotBuilt: Problem(409, "model-not-built", "Model not built"),
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
    Unauthenticated: Problem(401, "unauthenticated", "Unauthenticated"),
    Forbidden: Problem(403, "forbidden", "Forbidden"),
    RateLimited: Problem(429, "rate-limited", "Too many requests", 1),
    V2BadRequest: Problem(400, "bad-request", "Bad Request"),
    V2NotFound: Problem(404, "not-found", "Not Found"),
    V2Unavailable: Problem(503, "service-unavailable", "Service Unavailable", 5),
}


def problem_of(exc: ServiceError) -> Problem:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return Problem(500, "internal", "Internal error")


@dataclass(frozen=True)
class ErrorReply:
    """What an error answer says, before an app writes it in its own body shape."""

    status: int
    slug: str
    title: str
    detail: str
    retry_after_s: float | None = None  # sent as Retry-After (whole seconds, at least 1)
    extensions: dict[str, Any] | None = None  # extra members, where the body shape has room for them

    @property
    def headers(self) -> dict[str, str] | None:
        if self.retry_after_s is None:
            return None
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


# How an app writes an error body: problem details here, {"error": ...} under /v2 (service.v2.errors).
Renderer = Callable[[ErrorReply], Response]


def problem_details(reply: ErrorReply) -> Response:
    """The one writer of RFC 9457 problem details."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + reply.slug,
        "title": reply.title,
        "status": reply.status,
        "detail": reply.detail,
    }
    body.update({k: v for k, v in (reply.extensions or {}).items() if k not in body})
    return JSONResponse(body, status_code=reply.status, media_type=PROBLEM_JSON, headers=reply.headers)


def reply_of(exc: ServiceError) -> ErrorReply:
    p = problem_of(exc)
    retry = exc.retry_after_s if exc.retry_after_s is not None else p.retry_after_s
    return ErrorReply(
        p.status, p.slug, p.title, exc.detail, retry if p.status in (429, 503) else None, exc.extensions
    )


def logged_reply(exc: ServiceError, path: str) -> ErrorReply:
    """The reply to `exc` on `path`; a failure of the service (5xx, but 503) is logged as an error."""
    reply = reply_of(exc)
    if reply.status >= 500 and reply.status != 503:
        log.error("%s on %s: %s", type(exc).__name__, path, exc.detail)
    return reply


# The client left before its body arrived: no server error. Nobody reads this answer; the request log and
# metrics show 499, nginx's "client closed request".
CLIENT_CLOSED = ErrorReply(
    499,
    "client-closed-request",
    "Client closed request",
    "The client closed the connection before the request body was received.",
)
# Anything else: a bug, logged where it is caught, and no detail of it in the answer.
INTERNAL = ErrorReply(500, "internal", "Internal error", "An unexpected error occurred.")


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# The scope key of a path a mount rewrote on its way in (service.api.routes.v2.V2Mount): errors name the
# path the client sent.
ORIGINAL_PATH = "convzoo.original_path"


def _http_reply(request: Request, exc: StarletteHTTPException) -> ErrorReply:
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) and status < 500 else title
    path = request.scope.get(ORIGINAL_PATH) or request.url.path
    if status == 404 and detail == "Not Found":
        detail = f"No route {path}; see /docs for the API."
    elif status == 405 and detail == "Method Not Allowed":
        detail = f"Method {request.method} is not allowed on {path}."
    return ErrorReply(status, title.lower().replace(" ", "-"), title, detail)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def _handlers(render: Renderer) -> dict[type[Exception], Handler]:
    """The app's exception handlers: every error becomes an ErrorReply, written by `render`."""

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return render(logged_reply(exc, request.url.path))

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render(ErrorReply(422, "invalid-parameter", "Invalid parameter", _validation_detail(exc)))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        response = render(_http_reply(request, exc))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def client_disconnect(request: Request, exc: Exception) -> Response:
        return render(CLIENT_CLOSED)

    async def unhandled(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return render(INTERNAL)

    return {
        ServiceError: service_error,
        RequestValidationError: request_validation,
        StarletteHTTPException: http_error,
        ClientDisconnect: client_disconnect,
        Exception: unhandled,
    }


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


def document_errors(schema: dict[str, Any], content: dict[str, Any]) -> None:
    """Every operation's 422 and `default` responses: the body the handlers above write (`content`)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Invalid parameter", "content": content}
            responses.setdefault("default", {"description": "Any other error", "content": content})


PROBLEM_CONTENT: dict[str, Any] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def install_error_handlers(app: FastAPI, render: Renderer = problem_details) -> None:
    """Every error the app returns goes through the table above and is written by `render`."""
    for exc_class, handler in _handlers(render).items():
        app.add_exception_handler(exc_class, handler)
