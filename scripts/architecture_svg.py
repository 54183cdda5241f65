"""Write docs/architecture.svg: the request path of POST /classify and POST /v2/.../infer, one swimlane
per process or kind of thread. Without front processes the service's own event loop and pool take the
front's lanes, and the link's hop is a call. Rerun after changing the path: `python scripts/architecture_svg.py`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from html import escape
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "architecture.svg"

LANES = [  # (title, second line, colour)
    ("front event loop", "HTTP and gRPC, one per front process", "#eef3f5"),
    ("front preprocess pool", "CONVZOO_PREPROCESS_THREADS", "#eaf6ea"),
    ("service event loop", "the link server, the models' lifecycle", "#e8f0fb"),
    ("batcher threads", "per model: CONVZOO_INFERENCE_THREADS", "#fdf1e3"),
    ("ONNX Runtime session", "CONVZOO_INTRA_OP_THREADS", "#f6e8f3"),
]
LANE_W, STEP_H, BOX_H, TOP, TITLE_H = 250, 52, 38, 46, 30


@dataclass(frozen=True)
class Step:
    lane: int
    text: str
    where: str  # the module that does it


FRONT, POOL, LOOP, BATCHER, SESSION = range(len(LANES))

# The service's side of every inference, whichever protocol asked.
MODELS = [
    Step(FRONT, "INFER frame over the link (Unix socket)", "fronts/remote, fronts/link, fronts/wire"),
    Step(LOOP, "link server: a read's frames, one submit", "fronts/link_server, manager"),
    Step(BATCHER, "DynamicBatcher: run when idle, else batch", "batcher"),
    Step(SESSION, "session.run(batch): logits", "runtime"),
    Step(BATCHER, "hooks: metrics, v2 statistics, live latency", "metrics, v2/statistics, live_latency"),
    Step(LOOP, "RESULT frames, once per batch", "fronts/link_server"),
]

HOT = [
    Step(FRONT, "accept; RequestLog, UploadLimit", "connections, logging, api/limits"),
    Step(FRONT, "HotClassify: one raw image, a named model", "api/hot_path"),
    Step(POOL, "decode + to_tensor (tiny ones: on the loop)", "api/classification, preprocess"),
    *MODELS,
    Step(FRONT, "softmax, top-k, labels; the answer", "postprocess, api/hot_path"),
]

CLASSIFY = [
    Step(FRONT, "accept; RequestLog, UploadLimit; the router", "connections, logging, main"),
    Step(FRONT, "states from the service (one CALL frame)", "api/deps, fronts/remote, fronts/mirror"),
    Step(FRONT, "model or model=auto; read the uploads", "api/choice, api/uploads"),
    Step(POOL, "decode (EXIF, frames, modes) + to_tensor", "preprocess"),
    *MODELS,
    Step(FRONT, "softmax, top-k, labels; ClassifyResponse", "postprocess, api/schemas"),
]

V2 = [
    Step(FRONT, "REST: the /v2 app (mount); gRPC: the servicer", "api/routes/v2, grpc/servicer"),
    Step(FRONT, "resolve model; read (gunzip) the body", "v2/handlers"),
    Step(POOL, "decode the tensors (bodies > 64 KiB)", "v2/codec"),
    Step(FRONT, "validate against the metadata", "v2/handlers"),
    *MODELS,
    Step(FRONT, "outputs (+ classification top-k); encode", "v2/classification, v2/codec"),
]


def _lanes(y0: int, height: int) -> list[str]:
    out = []
    for i, (name, detail, colour) in enumerate(LANES):
        x = 10 + i * LANE_W
        middle = x + (LANE_W - 6) / 2
        out.append(f'<rect x="{x}" y="{y0}" width="{LANE_W - 6}" height="{height}" fill="{colour}" rx="6"/>')
        out.append(
            f'<text x="{middle}" y="{y0 + 16}" font-size="12" font-weight="bold" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
        out.append(
            f'<text x="{middle}" y="{y0 + 30}" font-size="10" fill="#555" '
            f'text-anchor="middle">{escape(detail)}</text>'
        )
    return out


def _flow(title: str, steps: list[Step], y0: int) -> tuple[list[str], int]:
    height = TOP + len(steps) * STEP_H
    out = [f'<text x="12" y="{y0 + 18}" font-size="15" font-weight="bold">{escape(title)}</text>']
    y0 += TITLE_H
    out += _lanes(y0, height)
    centres = []
    for i, step in enumerate(steps):
        x = 10 + step.lane * LANE_W + 8
        y = y0 + TOP + i * STEP_H
        w = LANE_W - 22
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{BOX_H}" fill="white" stroke="#444" rx="4"/>')
        out.append(f'<text x="{x + 6}" y="{y + 15}" font-size="11">{escape(step.text)}</text>')
        out.append(f'<text x="{x + 6}" y="{y + 30}" font-size="10" fill="#666">{escape(step.where)}</text>')
        centres.append((x + w / 2, y, y + BOX_H))
    for (xa, _, ya), (xb, yb, _) in itertools.pairwise(centres):
        out.append(
            f'<line x1="{xa}" y1="{ya}" x2="{xb}" y2="{yb}" stroke="#333" stroke-width="1.3" '
            'marker-end="url(#arrow)"/>'
        )
    return out, y0 + height + 14


def svg() -> str:
    width = 20 + len(LANES) * LANE_W
    parts: list[str] = []
    y = 6
    flows = (
        ("POST /classify, one raw image (the hot path), in a front process (the default on 2+ cores)", HOT),
        ("POST /classify, multipart or model=auto: the route, in a front", CLASSIFY),
        ("POST /v2/models/{name}/infer, REST or gRPC, in a front", V2),
    )
    for title, steps in flows:
        drawn, y = _flow(title, steps, y)
        parts += drawn
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" '
        'font-family="sans-serif">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>'
        f'<rect width="{width}" height="{y}" fill="white"/>'
    )
    return "\n".join([head, *parts, "</svg>"]) + "\n"


if __name__ == "__main__":
    OUT.write_text(svg())
    print(f"wrote {OUT.relative_to(OUT.parents[1])}")
