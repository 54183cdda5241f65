"""GET /models (json, markdown, csv), GET /models/{name}, GET /models/{name}/labels."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from service.api import views
from service.api.deps import ManagerDep
from service.api.schemas import LabelList, ModelDetail, ModelList, ModelSummary, RolloutReport
from service.core.errors import InvalidParameter
from service.rollouts import versions

router = APIRouter(prefix="/models", tags=["models"])

# The comparison table's columns: (summary key, heading).
TABLE_COLUMNS: list[tuple[str, str]] = [
    ("name", "name"),
    ("size_mb", "size (MB)"),
    ("top1", "top-1"),
    ("top5", "top-5"),
    ("params", "parameters"),
    ("depth", "depth"),
    ("latency_ms", "latency p50 (ms)"),
    ("throughput_ips", "throughput (img/s)"),
    ("status", "status"),
]


EMPTY_CELL = "–"  # noqa: RUF001 -- an en dash marks an empty cell of the markdown table
SORTABLE = list(ModelSummary.model_fields)


def sort_summaries(summaries: list[ModelSummary], sort: str) -> list[ModelSummary]:
    """Sort by one field, `-` prefix for descending; missing (null) values always come last."""
    descending = sort.startswith("-")
    key = sort[1:] if descending else sort
    if key not in SORTABLE:
        raise InvalidParameter(f"Cannot sort by {key!r}; sort by one of: {', '.join(sorted(SORTABLE))}.")
    values = {id(s): getattr(s, key) for s in summaries}
    present = [s for s in summaries if values[id(s)] is not None]
    missing = [s for s in summaries if values[id(s)] is None]
    try:
        present.sort(
            key=lambda s: v if not isinstance(v := values[id(s)], list) else str(v), reverse=descending
        )
    except TypeError:
        present.sort(key=lambda s: str(values[id(s)]), reverse=descending)
    return present + missing


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_markdown(summaries: list[ModelSummary]) -> str:
    head = "| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" if k in ("name", "status") else "---:" for k, _ in TABLE_COLUMNS) + "|"
    rows = [
        "| " + " | ".join(_cell(getattr(s, k)) or EMPTY_CELL for k, _ in TABLE_COLUMNS) + " |"
        for s in summaries
    ]
    return "\n".join([head, rule, *rows]) + "\n"


def to_csv(summaries: list[ModelSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([k for k, _ in TABLE_COLUMNS])
    for s in summaries:
        writer.writerow(["" if (v := getattr(s, k)) is None else v for k, _ in TABLE_COLUMNS])
    return buf.getvalue()


@router.get(
    "",
    summary="Every registry model, with its status and measured latency",
    response_model=ModelList,
    responses={200: {"content": {"text/markdown": {}, "text/csv": {}}}},  # format=markdown, format=csv
)
async def list_models(
    manager: ManagerDep,
    sort: Annotated[str | None, Query(description="A summary field; `-` prefix for descending")] = None,
    dataset: Annotated[str | None, Query(description="Only models of this dataset")] = None,
    format: Annotated[Literal["json", "markdown", "csv"], Query()] = "json",
) -> ModelList | Response:
    listed = views.model_list(manager)
    summaries = listed.models
    if dataset is not None:
        summaries = [s for s in summaries if s.dataset == dataset]
    if sort:
        summaries = sort_summaries(summaries, sort)
    if format == "markdown":
        return PlainTextResponse(to_markdown(summaries), media_type="text/markdown; charset=utf-8")
    if format == "csv":
        return PlainTextResponse(to_csv(summaries), media_type="text/csv; charset=utf-8")
    return ModelList(default=listed.default, host=listed.host, models=summaries)


@router.get("/{name}", summary="One model: summary, preprocessing, artifact, parity, provenance")
async def get_model(name: str, manager: ManagerDep) -> ModelDetail:
    return views.detail(manager, name)


@router.get(
    "/{name}/rollout", summary="A model's versions, its serving policy, the canary's and the shadow's figures"
)
async def get_rollout(name: str, manager: ManagerDep) -> RolloutReport:
    model = versions.split(name)[0]
    fields = views.rollout_summary(manager, model)  # an unknown model: 404
    return RolloutReport.model_validate({"model": model, **fields, **await manager.rollout(model)})


@router.get("/{name}/labels", summary="The model's class labels, by output index")
async def get_labels(name: str, manager: ManagerDep) -> LabelList:
    return LabelList(labels=manager.labels(name))
