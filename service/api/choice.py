"""The service side of selection: candidates from the model manager with this host's latencies,
and the dependency that resolves `model=auto` for /classify."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from service.api.deps import InferenceDep
from service.api.selection import AUTO, Candidate, Constraints, LatencySource, select
from service.compute import host
from service.core.errors import InvalidParameter, ModelUnavailable
from service.core.settings import Settings
from service.interfaces import LiveLatencies, Models, ModelStatus


def latency_here(
    state: ModelStatus, settings: Settings, recent: LiveLatencies | None, provider: str
) -> tuple[float | None, LatencySource | None, int | None]:
    """The model's p50 on this host: recent live traffic, else the service's calibration, else the
    registry's figure when it was measured on this kind of machine with this provider."""
    live = recent.p50_ms(state.entry.name) if recent is not None else None
    if live is not None:
        return live[0], "live", live[1]
    if state.calibration is not None:
        return state.calibration.p50_ms, "calibration", state.calibration.samples
    measured = state.entry.latency
    if measured is not None:
        here = host.describe(
            provider=state.model.providers[0] if state.model is not None else provider,
            intra_op_threads=settings.intra_op_threads,
        )
        if host.same_machine(measured.host, here):
            return measured.p50_ms, "registry", None
    return None, None, None


def candidates(manager: Models, settings: Settings, recent: LiveLatencies | None) -> list[Candidate]:
    out = []
    for state in manager.states():
        e, m = state.entry, state.entry.metrics
        latency, source, samples = latency_here(state, settings, recent, manager.provider)
        out.append(
            Candidate(
                name=e.name,
                dataset=e.dataset,
                weights=e.weights.kind,
                status=state.status,
                status_reason=state.reason,
                top1=m.top1,
                accuracy_source=m.accuracy_source,
                size_mb=m.size_mb,
                gflops=m.gflops,
                latency_ms=latency,
                latency_source=source,
                latency_samples=samples,
            )
        )
    return out


@dataclass(frozen=True)
class ModelChoice:
    name: str
    selection: dict[str, Any] | None  # how `model=auto` chose; None for a named model


async def choose_model(
    services: InferenceDep,
    model: Annotated[
        str | None, Query(description="A registry model name, or `auto` to choose by the constraints below")
    ] = None,
    max_latency_ms: Annotated[
        float | None, Query(gt=0, description="auto: p50 latency measured on this host, at most")
    ] = None,
    min_top1: Annotated[float | None, Query(ge=0, le=1, description="auto: top-1 accuracy, at least")] = None,
    max_size_mb: Annotated[float | None, Query(gt=0, description="auto: artifact size, at most")] = None,
    dataset: Annotated[
        str | None, Query(description="auto: the dataset (required when the registry has several)")
    ] = None,
) -> ModelChoice:
    """The model a request names, or the one `model=auto` chooses; a chosen model that fails to load
    is marked unavailable by the manager, and the choice is made again without it."""
    manager, settings, recent = services.manager, services.settings, services.recent
    constraints = Constraints(max_latency_ms, min_top1, max_size_mb, dataset)
    if model != AUTO:
        if constraints.given():
            raise InvalidParameter(
                "max_latency_ms, min_top1, max_size_mb and dataset apply only with model=auto."
            )
        name = model or manager.default
        await manager.learn(name)
        return ModelChoice(name, None)
    await manager.refresh()  # auto reads every model's state and latencies
    for _ in manager.states():
        selection = select(candidates(manager, settings, recent), constraints)
        try:
            await manager.ensure_loaded(selection.chosen.name)
        except ModelUnavailable:
            continue
        return ModelChoice(selection.chosen.name, selection.as_dict())
    select(candidates(manager, settings, recent), constraints)  # raises NoModelFits
    raise ModelUnavailable("No model meeting the constraints could be loaded.")


ModelChoiceDep = Annotated[ModelChoice, Depends(choose_model)]
