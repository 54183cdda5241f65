"""The one dependency of the routes: the app's Services, from the ASGI lifespan state.

It is `async def` on purpose: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per
request for a mere lookup (measured: a large share of a small model's request cost). `ServicesDep` also
brings the models' states up to date for a route that reads them (a front process asks the service once
per request); `InferenceDep` does not: an inference route needs only the entry of the model it names, and
the service process checks the model itself when the tensor reaches it (as the hot path and gRPC's
ModelInfer do).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from service.api.hot_path import Serving
from service.interfaces import Models
from service.services import STATE_KEY, Services


def services_of(state: object) -> Services:
    """The Services in a request's (or the lifespan's) state mapping."""
    services = state.get(STATE_KEY) if isinstance(state, dict) else None
    if not isinstance(services, Services):
        raise RuntimeError("no lifespan state: serve the app with an ASGI server that runs its lifespan")
    return services


def serving_of(scope: Scope) -> Serving | None:
    """The models as the hot path needs them, from the request's lifespan state; None without a lifespan."""
    try:
        services = services_of(scope.get("state"))
    except RuntimeError:
        return None
    manager = services.manager
    return Serving(
        manager, services.settings, services.preprocess_pool, manager.entry, manager.default, services.monitor
    )


async def get_services(request: Request) -> Services:
    services = services_of(request.scope.get("state"))
    await services.manager.refresh()
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_inference_services(request: Request) -> Services:
    return services_of(request.scope.get("state"))


InferenceDep = Annotated[Services, Depends(get_inference_services)]


async def get_manager(request: Request) -> Models:
    return (await get_services(request)).manager


# A shorthand for routes that need the models only.
ManagerDep = Annotated[Models, Depends(get_manager)]
