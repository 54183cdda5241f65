"""GET /models/pareto: the accuracy-versus-cost frontier of one dataset (before /models/{name})."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.choice import candidates
from service.api.deps import ServicesDep
from service.api.schemas import FrontierPoint, ParetoResponse
from service.api.selection import CostAxis, pareto, resolve_dataset

router = APIRouter(prefix="/models", tags=["models"])

UNITS = {"latency": "ms (p50, batch 1, measured on this host)", "size": "MB", "gflops": "GMACs per image"}


@router.get("/pareto", summary="The models on the accuracy-versus-cost frontier, cheapest first")
async def get_pareto(
    services: ServicesDep,
    dataset: Annotated[
        str | None, Query(description="Required when the registry has several datasets")
    ] = None,
    x: Annotated[CostAxis, Query(description="The cost axis")] = "latency",
) -> ParetoResponse:
    pool = candidates(services.manager, services.settings, services.recent)
    chosen = resolve_dataset(pool, dataset)
    of_dataset = [c for c in pool if c.dataset == chosen]
    frontier = pareto(of_dataset, x)
    on = {p.candidate.name for p in frontier}
    return ParetoResponse(
        dataset=chosen,
        x=x,
        unit=UNITS[x],
        frontier=[
            FrontierPoint(
                name=p.candidate.name,
                cost=round(p.cost, 4) if x == "latency" else p.cost,  # latency: as /classify shows it
                top1=p.candidate.top1,
                accuracy_source=p.candidate.accuracy_source,
                latency_source=p.candidate.latency_source if x == "latency" else None,
                status=p.candidate.status,
            )
            for p in frontier
        ],
        off_frontier=sorted(c.name for c in of_dataset if c.name not in on),
    )
