"""GET /models/{name}/monitor: what a model version sees (its window, reference and drift);
POST /models/{name}/monitor/reference: capture its reference from the next answers (docs/monitoring.md).

Both ask the one live monitor, in the service process (from a front: one call over the link)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import ServicesDep
from service.api.schemas import CaptureState, MonitorReport

router = APIRouter(prefix="/models", tags=["monitor"])


@router.get("/{name}/monitor", summary="What the model version sees: window, reference, drift")
async def monitor(name: str, services: ServicesDep) -> MonitorReport:
    entry = services.manager.entry(name)  # 404 for an unknown name
    return MonitorReport.model_validate(await services.monitor.report(entry))


@router.post(
    "/{name}/monitor/reference",
    summary="Capture the model version's reference from its next answers",
    response_model_exclude_unset=True,  # `error` only where the capture failed
)
async def capture_reference(
    name: str,
    services: ServicesDep,
    samples: Annotated[int, Query(ge=50, le=100_000, description="Answers to record")] = 1000,
) -> CaptureState:
    entry = services.manager.entry(name)
    return CaptureState.model_validate(await services.monitor.capture(entry, samples))
