"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from service.access.auth import exposure
from service.api.deps import ServicesDep
from service.api.schemas import Live, Ready
from service.core.errors import NotReady

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="200 while the process serves requests")
async def live() -> Live:
    return Live()


@router.get(
    "/ready",
    summary="200 once the default model and every preloaded model are loaded and warmed up, else 503",
)
async def ready(services: ServicesDep) -> Ready:
    manager = services.manager
    ok, reason, models = manager.readiness()
    if not ok:
        # The problem document names the models still loading and those that cannot load.
        raise NotReady(reason, extensions=models)
    return Ready(
        default=manager.default,
        detail=reason,
        loaded=models["loaded"],
        loading=models["loading"],
        unavailable=models["unavailable"],
        exposure=exposure(services.settings),
        rollout_failed=models.get("rollout_failed", []),
    )
