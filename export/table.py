"""The registry as the seed's comparison table, plus cost columns measured here."""

from __future__ import annotations

from service.core.registry import ModelEntry, Registry

COLUMNS = ("Model", "Size", "Top-1", "Top-5", "Parameters", "Depth", "GFLOPs", "Latency p50", "Source")
_RIGHT = {"Size", "Top-1", "Top-5", "Parameters", "Depth", "GFLOPs", "Latency p50"}


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def row(entry: ModelEntry) -> tuple[str, ...]:
    m = entry.metrics
    size = (
        "-"
        if m.size_mb is None
        else (f"{m.size_mb:.1f} MB" if m.size_mb >= 1 else f"{m.size_mb * 1000:.0f} kB")
    )
    latency = "-" if entry.latency is None else f"{entry.latency.p50_ms:.2f} ms"
    source: str = m.accuracy_source or ("random weights" if entry.weights.kind == "random" else "-")
    if m.accuracy_source is not None and m.accuracy_split:
        source = f"{source} ({entry.dataset} {m.accuracy_split})"
    return (
        entry.name,
        size,
        _fraction(m.top1),
        _fraction(m.top5),
        f"{m.params:,}",
        str(m.depth),
        f"{m.gflops:.4f}" if m.gflops < 0.1 else f"{m.gflops:.2f}",
        latency,
        source,
    )


def render(registry: Registry) -> str:
    """A fixed-width text table, one row per model in registry order; the default model is starred."""
    rows = [row(m) for m in registry.models]
    rows = [(f"{r[0]} *" if r[0] == registry.default else r[0], *r[1:]) for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            cell.rjust(w) if col in _RIGHT else cell.ljust(w)
            for cell, w, col in zip(cells, widths, COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    latency_hosts = {m.latency.host.cpu for m in registry.models if m.latency is not None}
    out.append("")
    out.append("* default model. Size: the ONNX file. Depth: weight layers on the longest path of the graph.")
    if latency_hosts:
        out.append(f"Latency: batch 1, ONNX Runtime CPU, measured on {', '.join(sorted(latency_hosts))}.")
    return "\n".join(out)
