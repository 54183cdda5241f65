"""`convzoo models`: GET /models as a rich table, the comparison table of the README."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _latency(model: dict[str, Any]) -> str:
    if model.get("latency_ms") is not None:
        return f"{model['latency_ms']:.2f}"
    if model.get("registry_latency_ms") is not None:  # not yet measured on this server
        return f"{model['registry_latency_ms']:.2f}*"
    return "-"


def models_table(listing: dict[str, Any]) -> Table:
    """One row per model of a GET /models body: accuracy, cost and the latency measured on the server."""
    table = Table(
        title=f"models (default: {listing.get('default')})",
        caption="latency: p50 at batch 1 on the server; * from the registry, measured on its export host",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("dataset", no_wrap=True)
    for heading in ("top-1", "params (M)", "GFLOPs", "size (MB)", "latency (ms)"):
        table.add_column(heading, justify="right")
    table.add_column("status")  # why a model is unavailable: GET /models/{name} or the web page
    for m in listing.get("models", []):
        table.add_row(
            m.get("name", "?"),
            m.get("dataset", "?"),
            _percent(m.get("top1")),
            _number(None if m.get("params") is None else m["params"] / 1e6, ".2f"),
            _number(m.get("gflops"), ".2g"),
            _number(m.get("size_mb"), ".1f"),
            _latency(m),
            m.get("status", "?"),
        )
    return table
