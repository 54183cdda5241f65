"""GET /models (json, markdown, csv), GET /models/{name}, GET /models/{name}/labels."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from service.api.deps import ManagerDep
from service.errors import InvalidParameter

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


def sort_summaries(summaries: list[dict[str, Any]], sort: str, fields: list[str]) -> list[dict[str, Any]]:
    """Sort by one field, `-` prefix for descending; missing (null) values always come last."""
    descending = sort.startswith("-")
    key = sort[1:] if descending else sort
    if key not in fields:
        raise InvalidParameter(f"Cannot sort by {key!r}; sort by one of: {', '.join(sorted(fields))}.")
    present = [s for s in summaries if s[key] is not None]
    missing = [s for s in summaries if s[key] is None]
    try:
        present.sort(key=lambda s: s[key] if not isinstance(s[key], list) else str(s[key]), reverse=descending)
    except TypeError:
        present.sort(key=lambda s: str(s[key]), reverse=descending)
    return present + missing


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_markdown(summaries: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" if k in ("name", "status") else "---:" for k, _ in TABLE_COLUMNS) + "|"
    rows = ["| " + " | ".join(_cell(s[k]) or "–" for k, _ in TABLE_COLUMNS) + " |" for s in summaries]  # noqa: RUF001 -- an en dash marks an empty cell
    return "\n".join([head, rule, *rows]) + "\n"


def to_csv(summaries: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([k for k, _ in TABLE_COLUMNS])
    for s in summaries:
        writer.writerow(["" if s[k] is None else s[k] for k, _ in TABLE_COLUMNS])
    return buf.getvalue()


@router.get(
    "",
    summary="Every registry model, with its status and measured latency",
    responses={200: {"content": {"text/markdown": {}, "text/csv": {}}}},  # format=markdown, format=csv
)
async def list_models(
    manager: ManagerDep,
    sort: Annotated[str | None, Query(description="A summary field; `-` prefix for descending")] = None,
    dataset: Annotated[str | None, Query(description="Only models of this dataset")] = None,
    format: Annotated[Literal["json", "markdown", "csv"], Query()] = "json",
) -> Response:
    summaries = manager.summaries()
    if dataset is not None:
        summaries = [s for s in summaries if s["dataset"] == dataset]
    if sort:
        summaries = sort_summaries(summaries, sort, list(manager.summary(manager.default)))
    if format == "markdown":
        return PlainTextResponse(to_markdown(summaries), media_type="text/markdown; charset=utf-8")
    if format == "csv":
        return PlainTextResponse(to_csv(summaries), media_type="text/csv; charset=utf-8")
    return JSONResponse({"default": manager.default, "models": summaries})


@router.get("/{name}", summary="One model: summary, preprocessing, artifact, parity, provenance")
async def get_model(name: str, manager: ManagerDep) -> dict[str, Any]:
    return manager.detail(name)


@router.get("/{name}/labels", summary="The model's class labels, by output index")
async def get_labels(name: str, manager: ManagerDep) -> dict[str, Any]:
    return {"labels": manager.labels(name)}
