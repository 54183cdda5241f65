"""GET /metrics: the Prometheus exposition of the service (the process that holds the models), whoever answers."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from service.api.deps import ServicesDep
from service.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "The exposition"}
    },
)
async def metrics(services: ServicesDep) -> Response:
    return Response(await services.exposition(), media_type=CONTENT_TYPE)
