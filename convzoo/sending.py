"""One file to the service: POST /classify with the image as a raw body, retried while the service says
it is busy (503, 429: after its Retry-After) or cannot be reached, up to a bound."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from convzoo.files import content_type
from convzoo.records import Record, from_answer

# Busy or not yet ready (503), over a rate (429), a gateway in front of the service (502, 504).
RETRY_STATUSES = {429, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5  # tries after the first
    max_wait_s: float = 30.0  # a longer Retry-After is cut to this
    backoff_s: float = 0.5  # without Retry-After: 0.5, 1, 2, ... s, with jitter

    def wait_s(self, retry: int, retry_after: str | None) -> float:
        told = parse_retry_after(retry_after)
        wait = told if told is not None else self.backoff_s * 2**retry * (0.5 + random.random())
        return min(wait, self.max_wait_s)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110, 10.2.3); None when absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Sender:
    """POSTs files to `/classify` over one client (its connection pool sized by the caller)."""

    def __init__(self, client: httpx.AsyncClient, params: dict[str, str], policy: RetryPolicy) -> None:
        self.client, self.params, self.policy = client, params, policy
        self.retried = 0  # retries over the run, for the summary

    async def classify(self, path: Path) -> Record:
        try:
            # On the event loop: a photo read from the page cache takes tens of microseconds, less than
            # a hop to a thread and back.
            body = path.read_bytes()  # noqa: ASYNC240
        except OSError as exc:
            return Record(str(path), None, 0, error=f"cannot read the file: {exc.strerror or exc}")
        headers = {"Content-Type": content_type(path)}
        attempt = 0
        while True:
            attempt += 1
            status, answer, retry_after, error = await self._post(body, headers)
            if attempt > self.policy.retries or (error is None and status not in RETRY_STATUSES):
                if error is not None:
                    return Record(str(path), None, attempt, error=error)
                return from_answer(str(path), status, answer, attempt)
            self.retried += 1
            await asyncio.sleep(self.policy.wait_s(attempt - 1, retry_after))

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str | None, str | None]:
        """(status, parsed JSON or None, Retry-After, transport error or None)."""
        try:
            r = await self.client.post("/classify", params=self.params, content=body, headers=headers)
        except httpx.TransportError as exc:
            return 0, None, None, f"no answer from the service ({type(exc).__name__}: {exc})"
        try:
            answer = json.loads(r.content)
        except ValueError:
            answer = None
        return r.status_code, answer, r.headers.get("retry-after"), None
