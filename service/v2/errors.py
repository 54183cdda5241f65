"""The one error type of the `/v2` routes, answered as `{"error": "..."}`."""

from __future__ import annotations


class V2Error(Exception):
    """A request the protocol answers with an error status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> V2Error:
    return V2Error(400, message)


def not_found(message: str) -> V2Error:
    return V2Error(404, message)


def unavailable(message: str) -> V2Error:
    return V2Error(503, message)
