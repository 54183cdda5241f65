"""Names of model versions and the serving policy's choice of one (docs/rollouts.md).

A request names `NAME` (it follows the model's policy: the stable version, or the canary for its share of
the clients) or `NAME@VERSION` (that version, pinned). Inside the service each version has a key: `NAME`
for the entry's own version, so that a registry of one version per model reads as it always did, and
`NAME@VERSION` for the others.
"""

from __future__ import annotations

import random
import zlib
from contextvars import ContextVar

from service.core.registry import ModelEntry, Registry, Serving

SEPARATOR = "@"
BUCKETS = 10_000  # a canary's percent is taken in hundredths: 10% is buckets 0..999
CLIENT_HEADERS = (b"x-client-id", b"x-api-key")  # the first one a request has decides its bucket

# The client of the request in progress (set by `ClientId` and by the gRPC servicer); None: anonymous.
client_id: ContextVar[str | None] = ContextVar("convzoo_client_id", default=None)


def split(name: str) -> tuple[str, str | None]:
    """`NAME@VERSION` to (NAME, VERSION); a plain name to (NAME, None)."""
    model, sep, version = name.partition(SEPARATOR)
    return (model, version) if sep else (model, None)


def joined(name: str, version: str | None) -> str:
    """A model's name and a version it names (None or empty: none) as one name, `NAME@VERSION`."""
    return f"{name}{SEPARATOR}{version}" if version else name


def key(entry: ModelEntry, version: str) -> str:
    """The key of one version of `entry` (a registry entry with its versions)."""
    return entry.name if version == entry.version else f"{entry.name}{SEPARATOR}{version}"


def entries(registry: Registry) -> dict[str, ModelEntry]:
    """Every version of every model as an entry of its own, by key."""
    return {key(m, v): m.version_entry(v) for m in registry.models for v in m.version_names}


def named_entry(registry: Registry, name: str, version: str) -> ModelEntry:
    """Version `version` of the model `name` names (plain or pinned), as an entry called `name`."""
    model, _ = split(name)
    return registry.get(model).version_entry(version, name=name)


def bucket(client: str | None) -> int:
    """A client's bucket, the same in every process and on every start (CRC-32, not Python's salted
    hash); an anonymous request gets a random one, so anonymous traffic splits by the percent too."""
    if client is None:
        return random.randrange(BUCKETS)
    return zlib.crc32(client.encode("utf-8", "replace")) % BUCKETS


def choose(policy: Serving, at: int) -> str:
    """The version that answers a request of bucket `at` under `policy`."""
    canary = policy.canary
    if canary is not None and at < round(canary.percent * BUCKETS / 100):
        return canary.version
    return policy.stable


class ClientId:
    """ASGI middleware: the request's client id (`X-Client-ID`, else its API key) for the canary's choice."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        token = None
        if scope.get("type") == "http":
            headers = dict(scope.get("headers") or [])  # type: ignore[call-overload]
            for name in CLIENT_HEADERS:
                value = headers.get(name)
                if value:
                    token = client_id.set(value.decode("latin-1"))
                    break
        try:
            await self.app(scope, receive, send)  # type: ignore[operator]
        finally:
            if token is not None:
                client_id.reset(token)
