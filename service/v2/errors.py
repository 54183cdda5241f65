"""The errors of the `/v2` app and the one writer of its error body, `{"error": "..."}`.

`V2Error` and its kinds are ServiceErrors (their statuses are in service.core.errors.PROBLEMS); whatever else
the service raises under /v2 (unknown route, overload, unavailable model) is written here as well.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from service.core.errors import ErrorReply, V2BadRequest, V2Error, V2NotFound, V2Unavailable

__all__ = ["V2Error", "bad_request", "error_body", "not_found", "unavailable"]

# What the rest of the service answers 413/415/422 is a bad request in the protocol.
_AS_BAD_REQUEST = {413, 415, 422}

# The OpenAPI content of the body below.
ERROR_CONTENT = {
    "application/json": {
        "schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    }
}


def error_body(reply: ErrorReply) -> Response:
    """The one writer of `{"error": "..."}`, with the protocol's status and the reply's Retry-After."""
    status = 400 if reply.status in _AS_BAD_REQUEST else reply.status
    return JSONResponse({"error": reply.detail}, status_code=status, headers=reply.headers)


def bad_request(message: str) -> V2Error:
    return V2BadRequest(message)


def not_found(message: str) -> V2Error:
    return V2NotFound(message)


def unavailable(message: str) -> V2Error:
    return V2Unavailable(message)
