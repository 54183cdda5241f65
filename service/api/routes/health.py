"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ManagerDep
from service.errors import NotReady

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="200 while the process serves requests")
async def live() -> dict[str, Any]:
    return {"status": "live"}


@router.get(
    "/ready",
    summary="200 once the default model and every preloaded model are loaded and warmed up, else 503",
)
async def ready(manager: ManagerDep) -> dict[str, Any]:
    ok, reason, models = manager.readiness()
    if not ok:
        # The problem document names the models still loading and those that cannot load.
        raise NotReady(reason, extensions=models)
    return {"status": "ready", "default": manager.default, "detail": reason, **models}
