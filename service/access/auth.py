"""Who is calling: the API key of a request, its scope and models, its quota; for HTTP (the `Guard`
middleware, installed by create_app, so every front enforces it) and gRPC (the servicer's common frame).

A route needs one scope (`scope_of`): the probes and the page are open; inference needs `infer`; the
models' state `read`; Triton's repository extension `admin`; `/metrics` `read` unless CONVZOO_METRICS_OPEN.
A refused request is answered before its body is read and before any of its work is queued. The key id,
never the secret, goes into the request log, the trace and the `client` metric label.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.access.keys import Key, KeyRing
from service.access.keys import Scope as KeyScope
from service.access.quota import FailureLimit, KeyQuota, Quotas
from service.core.errors import Forbidden, RateLimited, ServiceError, Unauthenticated
from service.core.registry import ModelEntry, Registry, Serving
from service.core.settings import Settings
from service.interfaces import Models, ModelStatus
from service.models.batcher import InferTimings
from service.rollouts import versions
from service.server.connections import content_length
from service.telemetry import tracing

log = logging.getLogger("convzoo.auth")

REALM = 'Bearer realm="convzoo"'
CLIENT_STATE = "client"  # the key id in a request's scope state, for the request log

# The open paths: probes, the page and its files, the API's documents.
_OPEN_PREFIXES = ("/health/", "/v2/health/", "/static/")
_OPEN_PATHS = frozenset({"/", "/favicon.ico", "/docs", "/redoc", "/openapi.json", "/v2/openapi.json"})


@dataclass(frozen=True)
class Need:
    """What a request needs: a scope (None: open) and the models it names."""

    scope: KeyScope | None
    models: tuple[str, ...] = ()


def scope_of(method: str, path: str, query: bytes, *, metrics_open: bool) -> Need:
    """The scope and named models of an HTTP request, from its method, path and query alone."""
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return Need(None)
    if path == "/metrics":
        return Need(None if metrics_open else "read")
    if path.startswith("/v2/repository/"):
        return Need("admin")
    parts = path.split("/")
    named: tuple[str, ...] = ()
    if path.startswith("/v2/models/") and len(parts) > 3:
        named = (parts[3],)
    elif path.startswith("/models/") and len(parts) > 2:
        named = (parts[2],)
    if method == "POST" and (path in ("/classify", "/compare") or path.endswith("/infer")):
        args = parse_qs(query.decode("latin-1")) if query else {}
        named += tuple(args.get("model", ()))
        for given in args.get("models", ()):
            named += tuple(n.strip() for n in given.split(",") if n.strip())
        return Need("infer", named)
    if method not in ("GET", "HEAD"):  # any other change of state is an operator's (a reference capture)
        return Need("admin", named)
    return Need("read", named)


def secret_of(headers: Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]]) -> str | None:
    """The key a client presents: `Authorization: Bearer <key>` or `X-API-Key: <key>` (names lower case,
    as ASGI and gRPC give them)."""
    for name, value in headers:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if key == "x-api-key":
            return text.strip()
        if key == "authorization":
            kind, _, token = text.strip().partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
    return None


@dataclass(frozen=True)
class Caller:
    """An admitted request's key, and its quota in this process (None: the key has none)."""

    key: Key
    quota: KeyQuota | None


_caller: ContextVar[Caller | None] = ContextVar("convzoo_caller", default=None)


def current_caller() -> Caller | None:
    return _caller.get()


def _rate_headers(quota: KeyQuota | None, wait_s: float) -> dict[str, str]:
    if quota is None:
        return {}
    return {"RateLimit-Policy": quota.policy(), "RateLimit": quota.state(wait_s)}


class Refused(Exception):
    """An answer before any work: the error, and the headers that go with it."""

    def __init__(
        self, error: ServiceError, headers: dict[str, str] | None = None, *, key_id: str = ""
    ) -> None:
        super().__init__(error.detail)
        self.error = error
        self.headers = headers or {}
        self.key_id = key_id  # a known key refused (scope, model, quota): named in the log and metrics


class Access:
    """The keys of this process and their quotas; `admit` decides each request."""

    def __init__(self, settings: Settings, *, share: int = 1) -> None:
        assert settings.api_keys_file is not None
        self.path = settings.api_keys_file
        self.settings = settings
        self.share = share
        self.ring = KeyRing.load(self.path)  # a bad file stops the start-up
        self.quotas = self._quotas()
        self.failures = FailureLimit(settings.auth_failures_per_s, settings.auth_failures_burst)
        self.known: frozenset[str] = frozenset()  # the registry's models, set by the lifespan
        _every.append(self)

    def _quotas(self) -> Quotas:
        return Quotas(share=self.share, queue_capacity=max(1, self.settings.max_queue_size // self.share))

    def reload(self) -> None:
        """Read the keys file again; a file that is not valid keeps the keys in force (and says so)."""
        try:
            ring = KeyRing.load(self.path)
        except ValueError as exc:
            log.error("keys not reloaded, the previous ones stay in force: %s", exc)
            return
        self.ring, self.quotas = ring, self._quotas()
        log.info("API keys reloaded from %s: %d key(s)", self.path, len(ring.keys))

    def _fail(self, source: str, detail: str) -> Refused:
        self.failures.failed(source)
        return Refused(Unauthenticated(detail), {"WWW-Authenticate": REALM})

    def admit(self, secret: str | None, need: Need, source: str) -> Caller | None:
        """The caller of a request (None for an open route), or Refused: 401 (no key, unknown, expired),
        403 (scope or model not allowed), 429 (over its quota, or too many failures from `source`)."""
        if need.scope is None:
            return None
        blocked = self.failures.blocked_for(source)
        if blocked > 0:
            raise Refused(
                RateLimited("Too many failed authentications from this address.", retry_after_s=blocked)
            )
        if secret is None:
            raise self._fail(source, "An API key is needed: Authorization: Bearer <key> or X-API-Key.")
        key = self.ring.find(secret)
        if key is None:
            raise self._fail(source, "Unknown API key.")
        if key.expired(dt.datetime.now(dt.UTC)):
            raise self._fail(source, f"API key {key.id} has expired.")
        if not key.allows(need.scope):
            raise Refused(
                Forbidden(f"API key {key.id} does not have the {need.scope!r} scope."), key_id=key.id
            )
        for name in need.models:
            if name in self.known and not key.allows_model(name):
                raise Refused(Forbidden(f"API key {key.id} may not use model {name!r}."), key_id=key.id)
        quota = self.quotas.quota(key)
        if not self.quotas.fair_share(key.id):  # before the bucket: a refusal takes no token
            raise Refused(
                RateLimited(f"API key {key.id} holds its share of the queue.", retry_after_s=1.0),
                _rate_headers(quota, 1.0),
                key_id=key.id,
            )
        if quota is not None:
            wait_s = quota.requests.take()
            if wait_s > 0:
                raise Refused(
                    RateLimited(f"API key {key.id} is over its rate.", retry_after_s=wait_s),
                    _rate_headers(quota, wait_s),
                    key_id=key.id,
                )
        return Caller(key, quota)

    @contextlib.contextmanager
    def serving(self, caller: Caller | None) -> Iterator[None]:
        """While an admitted request runs: its place in the queue's fair share, and the caller for the
        models (GuardedModels)."""
        if caller is None:
            yield
            return
        quotas = self.quotas  # a reload meanwhile replaces them: leave the ones entered
        quotas.enter(caller.key.id)
        token = _caller.set(caller)
        try:
            yield
        finally:
            _caller.reset(token)
            quotas.leave(caller.key.id)


class Guard:
    """ASGI middleware: each HTTP request admitted (or refused) by `access` before the app sees it."""

    def __init__(
        self, app: ASGIApp, *, access: Access, render: Callable[[Scope, ServiceError], Response]
    ) -> None:
        self.app = app
        self.access = access
        self.render = render
        self.metrics_open = access.settings.metrics_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = scope_of(scope["method"], scope["path"], scope["query_string"], metrics_open=self.metrics_open)
        client = scope.get("client")
        try:
            caller = self.access.admit(secret_of(scope["headers"]), need, client[0] if client else "")
        except Refused as refused:
            if refused.key_id:
                scope.setdefault("state", {})[CLIENT_STATE] = refused.key_id
            response = self.render(scope, refused.error)
            response.headers.update(refused.headers)
            await _drain_small(scope, receive)
            await response(scope, receive, send)
            return
        if caller is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[CLIENT_STATE] = caller.key.id
        tracing.annotate(client=caller.key.id)
        with self.access.serving(caller):
            await self.app(scope, receive, send)


# A refused request's body up to this size is read and dropped, so its connection stays open: a client
# refused in a loop (over its quota) then costs no new connection per request, which measured as the
# larger part of a refusal's cost (docs/auth.md). A larger or chunked body still ends the connection
# (CloseUnread), unread.
DRAIN_BYTES = 65_536


async def _drain_small(scope: Scope, receive: Receive) -> None:
    declared = content_length(scope)
    if declared is None or not 0 < declared <= DRAIN_BYTES:
        return
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        more = bool(message.get("more_body", False))


def _charge(name: str, images: int) -> None:
    """The current caller may use model `name` for `images` more images, or Forbidden / RateLimited."""
    caller = _caller.get()
    if caller is None:
        return
    if not caller.key.allows_model(versions.split(name)[0]):  # chosen by the service (default, auto, compare)
        raise Forbidden(f"API key {caller.key.id} may not use model {name!r}.")
    quota = caller.quota
    if quota is not None and quota.images is not None:
        wait_s = quota.images.take(images)
        if wait_s > 0:
            raise RateLimited(f"API key {caller.key.id} is over its image rate.", retry_after_s=wait_s)


class GuardedModels:
    """The models as an admitted request sees them: each inference checks the caller's model list (for
    the models the service chooses) and takes its images from the caller's image quota, before anything
    is queued. Everything else is the models' own."""

    def __init__(self, models: Models) -> None:
        self.models = models

    @property
    def registry(self) -> Registry:
        return self.models.registry

    @property
    def default(self) -> str:
        return self.models.default

    @property
    def provider(self) -> str:
        return self.models.provider

    def host_description(self) -> dict[str, object]:
        return self.models.host_description()

    async def refresh(self) -> None:
        await self.models.refresh()

    async def learn(self, name: str) -> None:
        await self.models.learn(name)

    @property
    def generation(self) -> int:
        return self.models.generation

    def states(self) -> Sequence[ModelStatus]:
        return self.models.states()

    def version_states(self, model: str) -> Sequence[ModelStatus]:
        return self.models.version_states(model)

    def state(self, name: str) -> ModelStatus:
        return self.models.state(name)

    def entry(self, name: str) -> ModelEntry:
        return self.models.entry(name)

    def labels(self, name: str) -> list[str]:
        return self.models.labels(name)

    def ready(self) -> tuple[bool, str]:
        return self.models.ready()

    def readiness(self) -> tuple[bool, str, dict[str, list[str]]]:
        return self.models.readiness()

    async def ensure_loaded(self, name: str) -> object:
        return await self.models.ensure_loaded(name)

    async def unload_model(self, name: str) -> bool:
        return await self.models.unload_model(name)

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float
    ) -> tuple[np.ndarray, InferTimings]:
        _charge(name, int(batch.shape[0]))
        return await self.models.infer(name, batch, deadline=deadline)

    def rollout_state(self, model: str) -> tuple[Serving, dict[str, str]]:
        return self.models.rollout_state(model)

    async def rollout(self, name: str) -> dict[str, Any]:
        return await self.models.rollout(name)

    async def reload(self) -> dict[str, Any]:
        return await self.models.reload()


# --- start-up and signals --------------------------------------------------------------------------------

_every: list[Access] = []  # this process's, for SIGHUP


def reload_all() -> None:
    for access in _every:
        access.reload()


def reload_on_sighup(forward: Callable[[int], None] | None = None) -> None:
    """SIGHUP reads the keys file again in this process (and, with `forward`, passes the signal on to the
    front processes): new, changed and removed keys take effect without a restart."""

    def handle(sig: int, frame: FrameType | None) -> None:
        reload_all()
        if forward is not None:
            forward(sig)

    signal.signal(signal.SIGHUP, handle)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(settings: Settings) -> str | None:
    """What start-up and /health/ready say of a service open to the network, or None."""
    if settings.api_keys_file is not None or loopback(settings.host):
        return None
    return (
        f"listening on {settings.host} beyond loopback without API keys: any client that reaches the port "
        "may classify and read; set CONVZOO_API_KEYS_FILE (docs/auth.md)"
    )
