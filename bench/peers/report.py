"""The side-by-side table of convzoo and its peers, and the targets against them, from one run's results.

Every peer's run is bracketed by convzoo runs (the one just before it, the one just after it) and its
ratio is to the mean of those two, so a drift of the shared host shows and is halved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SMALL, LARGE = "fmnist-lenet5", "resnet50"
POINTS: list[tuple[str, int]] = [(SMALL, 1), (SMALL, 8), (SMALL, 32), (LARGE, 1), (LARGE, 8)]
BEGIN, END = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"


def _rate(rows: list[dict[str, Any]], concurrency: int) -> float | None:
    found = [r["images_per_s"] for r in rows if r["concurrency"] == concurrency]
    return found[0] if found else None


def convzoo_beside(result: dict[str, Any], concurrency: int) -> float | None:
    """convzoo's rate beside one peer's run: the mean of its runs just before and just after it."""
    runs = [result.get("convzoo_before", []), result.get("convzoo_after", [])]
    rates = [x for x in (_rate(rows, concurrency) for rows in runs) if x is not None]
    return sum(rates) / len(rates) if rates else None


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """convzoo >= every peer that ran, at every point."""
    out = []
    for entry in r.get("peers", []):
        for model, c in POINTS:
            result = entry["results"].get(model, {})
            peer = _rate(result.get("points", []), c)
            ours = convzoo_beside(result, c)
            if peer is None or ours is None or peer <= 0:
                continue
            out.append(
                {
                    "target": f"{model} c{c}: convzoo / {entry['peer']}",
                    "value": round(ours / peer, 3),
                    "required": ">= 1",
                    "met": ours >= peer,
                    "figures": f"{ours:.1f} / {peer:.1f} images/s",
                }
            )
    return out


def _cell(value: float | None, ref: float | None) -> str:
    if value is None:
        return "—"
    if ref is None or ref <= 0:
        return f"{value:,.1f}"
    return f"{value:,.1f} ({value / ref:.2f}x)"


def table(r: dict[str, Any]) -> list[str]:
    heads = " | ".join(f"{m} c{c}" for m, c in POINTS)
    lines = [f"| server | version | {heads} | status |", "|---|---|" + "---:|" * len(POINTS) + "---|"]
    for label, key in (
        ("convzoo, before the peers", "convzoo"),
        ("convzoo, after the last peer", "convzoo_after_peers"),
    ):
        runs = r.get(key, {})
        cells = " | ".join(_cell(_rate(runs.get(m, []), c), None) for m, c in POINTS)
        lines.append(f"| {label} | {r.get('convzoo_version', '')} | {cells} | ok |")
    for entry in r.get("peers", []):
        res = entry["results"]
        cells = " | ".join(
            _cell(_rate(res.get(m, {}).get("points", []), c), convzoo_beside(res.get(m, {}), c))
            for m, c in POINTS
        )
        status = "; ".join(f"{m}: {res[m]['status']}" for m in res if res[m]["status"] != "ok") or "ok"
        lines.append(f"| {entry['peer']} | {entry['version'] or '—'} | {cells} | {status} |")
    return lines


def markdown(r: dict[str, Any]) -> str:
    rows = targets(r)
    met = sum(t["met"] for t in rows)
    out = [
        "# convzoo and the servers users would pick instead",
        "",
        "images/s per server and load point (one image per request, wrk); in brackets the ratio to convzoo at",
        "that point (the mean of convzoo's runs just before and just after that peer). Every server serves the",
        "same ONNX file through ONNX Runtime with convzoo's session options and preprocessing, max batch 32,",
        "1 ms queue delay (BentoML: adaptive batching, no fixed delay), one inference worker. The host is",
        "shared: the ratios measured side by side are the result, not the rates.",
        "",
        *table(r),
        "",
        f"Targets: convzoo >= every peer at every point: {met} of {len(rows)} met.",
        "",
        "| target | convzoo / peer | figures | met |",
        "|---|---:|---|---|",
        *(
            f"| {t['target']} | {t['value']:.2f} | {t['figures']} | {'met' if t['met'] else 'NOT met'} |"
            for t in rows
        ),
        "",
    ]
    return "\n".join(out)


def write(r: dict[str, Any], out: Path) -> Path:
    path = out / "bench-peers.md"
    path.write_text(markdown(r), encoding="utf-8")
    return path


def update_readme(r: dict[str, Any], readme: Path) -> bool:
    """Replace the block between the peers' markers, if the README has them."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    block = "\n".join([BEGIN, *table(r), END])
    readme.write_text(head + block + tail, encoding="utf-8")
    return True
