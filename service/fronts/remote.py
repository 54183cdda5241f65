"""The services of a front process: the service's models over the link (`RemoteModels`, the same interface
as the model manager), this front's own preprocessing pool, and metrics recorded by the service.

With them, a front runs the very app the service runs alone (service/main.py, `create_app`): every route,
/v2, gRPC and the page, one implementation each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import numpy as np

from service.core.errors import UnknownModel, unknown_model
from service.core.registry import ModelEntry, Registry, Serving, full_decoding, load_registry
from service.core.settings import Settings
from service.fronts.link import ModelLink
from service.fronts.mirror import Mirror, State
from service.images import preprocess
from service.models.batcher import InferTimings
from service.monitor.watch import LinkedWatch, sampler_of
from service.rollouts import versions
from service.services import Services, ServicesFrom, preprocess_pool
from service.telemetry.metrics import Metrics

log = logging.getLogger("convzoo.fronts")

LINK_WAIT_S = 120.0  # a service whose start-up takes longer gets its fronts started again by its watch
CALL_TIMEOUT_S = 10.0  # a call that reads state; loads wait for as long as a request may
# Unknown names are the client's: at most one snapshot this often for them, so that a flood of unknown
# names costs the service process no more than one state-reading request per second.
LEARN_INTERVAL_S = 1.0


class RemoteModels:
    """The service's models (service/interfaces.py, `Models`), over the link."""

    def __init__(self, registry: Registry, link: ModelLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.mirror = Mirror(registry)
        self._learned_at = -LEARN_INTERVAL_S

    @property
    def registry(self) -> Registry:
        """The registry as the service applies it (it may have reloaded since this front started)."""
        return self.mirror.registry

    @property
    def generation(self) -> int:
        return self.mirror.generation

    @property
    def default(self) -> str:
        return self.registry.default

    @property
    def provider(self) -> str:
        return self.mirror.provider

    def host_description(self) -> dict[str, object]:
        return self.mirror.host

    async def refresh(self) -> None:
        self.mirror.update(
            await self.link.call("snapshot", CALL_TIMEOUT_S, generation=self.mirror.generation)
        )
        self.link.registry = self.mirror.registry

    async def learn(self, name: str) -> None:
        if name in self.mirror.states or time.monotonic() - self._learned_at < LEARN_INTERVAL_S:
            return
        try:
            self.entry(name)  # a version of a known model, NAME@VERSION
        except UnknownModel:
            self._learned_at = time.monotonic()
            await self.refresh()

    def states(self) -> Sequence[State]:
        return self.mirror.ordered()

    def state(self, name: str) -> State:
        state = self.mirror.states.get(name)
        if state is None:
            raise unknown_model(name, self.mirror.states)
        return state

    def version_states(self, model: str) -> list[State]:
        entry = self.entry(model)
        return [self.state(versions.joined(model, v)) for v in self.registry.get(entry.name).version_names]

    def entry(self, name: str) -> ModelEntry:
        state = self.mirror.states.get(name)
        if state is not None:
            return state.entry
        model, version = versions.split(name)
        try:
            found = self.registry.get(model)
            return found if version is None else found.version_entry(version, name=name)
        except (ValueError, KeyError):
            raise unknown_model(name, self.mirror.states) from None

    def labels(self, name: str) -> list[str]:
        return self.registry.label_sets[self.entry(name).labels]

    def rollout_state(self, model: str) -> tuple[Serving, dict[str, str]]:
        if model not in self.mirror.states:
            raise unknown_model(model, self.mirror.states)
        return self.mirror.rollout_state(model)

    async def rollout(self, name: str) -> dict[str, Any]:
        return await self.link.call("rollout", CALL_TIMEOUT_S, name=name)

    async def reload(self) -> dict[str, Any]:
        return await self.link.call("reload", self.settings.request_timeout_s + 60.0)

    def ready(self) -> tuple[bool, str]:
        ok, reason, _ = self.mirror.readiness
        return ok, reason

    def readiness(self) -> tuple[bool, str, dict[str, list[str]]]:
        return self.mirror.readiness

    async def ensure_loaded(self, name: str) -> object:
        return await self.link.call("ensure_loaded", self.settings.request_timeout_s + 1.0, name=name)

    async def unload_model(self, name: str) -> bool:
        reply = await self.link.call("unload", CALL_TIMEOUT_S, name=name)
        return bool(reply["unloaded"])

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float
    ) -> tuple[np.ndarray, InferTimings]:
        return await self.link.infer(name, batch, deadline=deadline)


class LinkedMetrics(Metrics):
    """A front's metrics: its finished requests are recorded by the service (sent over the link), which
    alone exposes them, with the models' own."""

    def __init__(self) -> None:
        super().__init__()
        self.link: ModelLink | None = None

    def observe_request(
        self, *, route: str, model: str, status: int, seconds: float, client: str = ""
    ) -> None:
        if self.link is not None:
            self.link.observe(route=route, model=model, status=status, seconds=seconds, client=client)


async def _connect(link: ModelLink, path: str) -> None:
    # Fronts start beside the service: the link opens once the service's lifespan has built its models'
    # manager. Until then the front does not listen.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINK_WAIT_S
    while True:
        try:
            await link.connect(path)
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


def linked(link_path: str) -> ServicesFrom:
    """`services_from` for `create_app` in a front process: its services, linked to the service at
    `link_path`."""

    @asynccontextmanager
    async def build(settings: Settings, metrics: Metrics) -> AsyncIterator[Services]:
        registry = load_registry(settings.registry_path)
        if not settings.reduce_at_decode:  # as the service's manager publishes it
            registry = full_decoding(registry)
        link = ModelLink(registry)
        await _connect(link, link_path)
        if isinstance(metrics, LinkedMetrics):
            metrics.link = link
        models = RemoteModels(registry, link, settings)
        await models.refresh()
        pool = preprocess_pool(settings)
        await asyncio.get_running_loop().run_in_executor(pool, preprocess.warm_up)

        async def exposition() -> bytes:
            reply = await link.call("metrics", CALL_TIMEOUT_S)
            return str(reply["text"]).encode()

        async def call(method: str, **args: object) -> dict[str, object]:
            return await link.call(method, CALL_TIMEOUT_S, **args)

        watch = LinkedWatch(settings, sampler_of(settings), link.observe_answers, call)
        try:
            yield Services(settings, models, pool, metrics, models.mirror, models.mirror, exposition, watch)
        finally:
            watch.close()
            link.close()
            pool.shutdown(wait=False, cancel_futures=True)

    def services_from(settings: Settings, metrics: Metrics) -> AbstractAsyncContextManager[Services]:
        return build(settings, metrics)

    return services_from
