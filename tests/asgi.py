"""The app as an ASGI server runs it: its lifespan state handed to every request (no uvicorn needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service.access.auth import GuardedModels
from service.api.deps import services_of
from service.models.manager import ModelManager
from service.services import Services


class Served:
    """An ASGI app that passes a copy of the lifespan state into each request's scope, as servers do."""

    def __init__(self, app: FastAPI, state: Mapping[str, Any]) -> None:
        self.app = app
        self.state = dict(state)

    @property
    def services(self) -> Services:
        return services_of(self.state)

    @property
    def manager(self) -> ModelManager:
        """The app's own model manager (an app built in process holds its models)."""
        manager = self.services.manager
        if isinstance(manager, GuardedModels):  # API keys on: the models as a request sees them
            manager = manager.models
        assert isinstance(manager, ModelManager)
        return manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "state": dict(self.state)}, receive, send)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[Served]:
    """Run the app's lifespan; inside, the app with its lifespan state."""
    async with app.router.lifespan_context(app) as state:
        yield Served(app, state or {})


def services_of_client(client: httpx.AsyncClient) -> Services:
    """The Services behind a client of `client_for` (tests/service/conftest.py)."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport) and isinstance(transport.app, Served)
    return transport.app.services


def manager_of_client(client: httpx.AsyncClient) -> ModelManager:
    """The model manager behind a client of `client_for`."""
    manager = services_of_client(client).manager
    if isinstance(manager, GuardedModels):  # API keys on: the models as a request sees them
        manager = manager.models
    assert isinstance(manager, ModelManager)
    return manager
