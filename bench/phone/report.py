"""The phone-photo section of docs/bench.md, from the section's results (bench.json's "phone"), typed.

It sits between its markers, so `python -m bench --only phone` replaces it in place and a full run that
skips it keeps the one already there (bench/report.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bench.phone import CONCURRENCIES, OURS

BEGIN, END = "<!-- bench-phone:begin -->", "<!-- bench-phone:end -->"
HOW = "## How the systems are run"  # the heading of bench.md the section goes before


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")  # what a later run adds is kept in bench.json, unread here


class PhonePoint(_Result):
    concurrency: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    requests: int
    failed: int = 0


class Limit(_Result):
    """Raw ONNX Runtime in-process (bench/phone/limit.py)."""

    decode_ms: dict[str, float]  # "full", "reduced"
    prepare_ms: dict[str, float]  # "full", "reduced", "usual"
    points: dict[str, list[PhonePoint]]  # "full", "reduced"


class PeerRow(_Result):
    key: str
    peer: str
    image_path: str
    version: str | None
    status: str
    points: list[PhonePoint]
    bracket: int  # convzoo's run just before this row; the one after it is the next


class ModelResult(_Result):
    convzoo_runs: list[list[PhonePoint]]  # the first before everything, then one after each peer
    limit: Limit
    peers: list[PeerRow]

    def _runs(self, bracket: int | None) -> list[list[PhonePoint]]:
        """convzoo's runs around `bracket` (the in-process rows: around 0), or all of them (None)."""
        if bracket is None:
            return self.convzoo_runs
        return self.convzoo_runs[bracket : bracket + 2]

    def convzoo_at(self, concurrency: int, bracket: int | None = None) -> float:
        """convzoo's images/s at `concurrency`: the mean of its runs around `bracket`, or of all."""
        rates = [_at(run, concurrency).images_per_s for run in self._runs(bracket)]
        return sum(rates) / len(rates)

    def convzoo_cpu(self, concurrency: int, bracket: int | None = None) -> float:
        cpu = [_at(run, concurrency).server_cpu_ms_per_request for run in self._runs(bracket)]
        return sum(cpu) / len(cpu)

    def convzoo_mean(self) -> list[PhonePoint]:
        """convzoo's rows, the mean over its runs."""
        runs = self.convzoo_runs
        return [
            PhonePoint(
                concurrency=c,
                images_per_s=self.convzoo_at(c),
                p50_ms=sum(_at(r, c).p50_ms for r in runs) / len(runs),
                p99_ms=sum(_at(r, c).p99_ms for r in runs) / len(runs),
                server_cpu_ms_per_request=self.convzoo_cpu(c),
                requests=sum(_at(r, c).requests for r in runs),
            )
            for c in CONCURRENCIES
        ]


class Photo(_Result):
    name: str
    bytes: int
    size: list[int]
    orientation: int


class PhoneHost(_Result):
    cpu: str
    cores: int
    load_average_at_start: list[float]
    load_average_at_end: list[float]


class PhoneRun(_Result):
    date: str
    host: PhoneHost
    photos: list[Photo]
    images_per_point: int  # at least
    min_point_s: float = 0.0  # and at least this long at the warm-up's rate
    models: dict[str, ModelResult]
    wall_s: float


def _at(points: list[PhonePoint], concurrency: int) -> PhonePoint:
    return next(p for p in points if p.concurrency == concurrency)


def _cells(points: list[PhonePoint], ref: dict[int, float] | None) -> str:
    """images/s (this / convzoo), p50 / p99 ms and server CPU ms per image at each concurrency."""
    if not points:
        return " | ".join("—" for _ in CONCURRENCIES for _ in range(3))
    cells = []
    for c in CONCURRENCIES:
        p = _at(points, c)
        rate = f"{p.images_per_s:.2f}"
        if ref is not None:
            rate += f" ({p.images_per_s / ref[c]:.2f}x)"
        cells += [rate, f"{p.p50_ms:,.0f} / {p.p99_ms:,.0f}", f"{p.server_cpu_ms_per_request:,.0f}"]
    return " | ".join(cells)


def table(model: str, m: ModelResult) -> list[str]:
    heads = " | ".join(f"c{c} images/s | c{c} p50 / p99 ms | c{c} CPU ms/image" for c in CONCURRENCIES)
    ref = {c: m.convzoo_at(c, 0) for c in CONCURRENCIES}
    spans = ", ".join(
        f"c{c} {min(_at(r, c).images_per_s for r in m.convzoo_runs):.2f} to "
        f"{max(_at(r, c).images_per_s for r in m.convzoo_runs):.2f}"
        for c in CONCURRENCIES
    )
    lines = [
        f"| {model} | image path | version | {heads} | status |",
        "|---|---|---|" + "---:|" * 3 * len(CONCURRENCIES) + "---|",
        (
            f"| convzoo /classify, the mean of its {len(m.convzoo_runs)} runs ({spans} images/s) "
            f"| its own (reduced-size decode) | | {_cells(m.convzoo_mean(), None)} | ok |"
        ),
        (
            "| raw ONNX Runtime, in-process | full decode + convzoo's preprocessing | | "
            f"{_cells(m.limit.points['full'], ref)} | ok |"
        ),
        (
            "| raw ONNX Runtime, in-process | convzoo's (reduced-size decode) | | "
            f"{_cells(m.limit.points['reduced'], ref)} | ok |"
        ),
    ]
    for p in m.peers:
        around = {c: m.convzoo_at(c, p.bracket) for c in CONCURRENCIES}
        lines.append(
            f"| {p.peer} | {p.image_path} | {p.version or '—'} | {_cells(p.points, around)} | {p.status} |"
        )
    return lines


def _costs(r: PhoneRun) -> list[str]:
    lines = [
        (
            "| model | full decode | convzoo's reduced decode | full decode + convzoo's preprocessing "
            "| convzoo's path, to the tensor | PIL + torchvision (Resize(256) ...), to the tensor |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, m in r.models.items():
        d, p = m.limit.decode_ms, m.limit.prepare_ms
        lines.append(
            f"| {model} | {d['full']:.0f} | {d['reduced']:.0f} | {p['full']:.0f} | {p['reduced']:.0f} "
            f"| {p['usual']:.0f} |"
        )
    return lines


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f}x" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}x to {hi:.1f}x"


def ratios(model: str, m: ModelResult) -> list[str]:
    """The ratios of this model's table, in words (at the highest concurrency)."""
    c = max(CONCURRENCIES)
    ours, ours_cpu = m.convzoo_at(c), m.convzoo_cpu(c)
    first = m.convzoo_at(c, 0)
    full, reduced = _at(m.limit.points["full"], c), _at(m.limit.points["reduced"], c)
    out = [
        (
            f"- **{model}, c{c}**: convzoo answers {ours:.1f} photos/s (the mean of its runs) for "
            f"{ours_cpu:.0f} ms of server CPU each; beside raw ONNX Runtime in-process, "
            f"{first / full.images_per_s:.1f}x its rate with a full decode ({full.images_per_s:.1f} "
            f"photos/s, {full.server_cpu_ms_per_request:.0f} ms of CPU each) and "
            f"{first / reduced.images_per_s:.0%} of its rate with convzoo's reduced decode, convzoo's own "
            f"limit ({reduced.images_per_s:.1f} photos/s)."
        )
    ]

    def rate(p: PeerRow) -> float:
        return _at(p.points, c).images_per_s

    ran = [p for p in m.peers if p.points]
    usual = [p for p in ran if p.image_path != OURS]
    if usual:
        times = [m.convzoo_at(c, p.bracket) / rate(p) for p in usual]
        each = ", ".join(f"{p.peer} {t:.1f}x" for p, t in zip(usual, times, strict=True))
        cpu = [_at(p.points, c).server_cpu_ms_per_request / m.convzoo_cpu(c, p.bracket) for p in usual]
        out.append(
            f"  Against the peers as their users deploy them: convzoo serves {_span(times)} their photos/s "
            f"({each}), and they spend {_span(cpu)} its server CPU per photo."
        )
    pairs = [(u, p) for u in usual for p in ran if p.image_path == OURS and p.peer == u.peer]
    if pairs:
        each = ", ".join(f"{p.peer} {rate(p) / rate(u):.1f}x" for u, p in pairs)
        reach = [rate(p) / m.convzoo_at(c, p.bracket) for _, p in pairs]
        out.append(
            f"  With convzoo's preprocessing instead, the same peers serve more photos/s ({each}) and reach "
            f"{_span(reach)} convzoo's rate."
        )
    missing = [p for p in m.peers if not p.points]
    if missing:
        out.append(
            "  Not measured: " + "; ".join(f"{p.peer}, {p.image_path}: {p.status}" for p in missing) + "."
        )
    return out


def section(r: PhoneRun) -> str:
    h = r.host
    sizes = [p.bytes / 1e6 for p in r.photos]
    portraits = sum(p.orientation == 6 for p in r.photos)
    width, height = r.photos[0].size if r.photos else (0, 0)
    out = [
        BEGIN,
        "## Phone photos (12 MP JPEGs)",
        "",
        (
            f"Generated by `python -m bench --only phone` (also part of `make bench`), one run on {r.date}, "
            f"{h.cores} vCPU ({h.cpu}), load average before/after {h.load_average_at_start[0]:.2f} / "
            f"{h.load_average_at_end[0]:.2f}: the host is shared with other work, so the ratios measured "
            f"side by side are the result, not the rates. {len(r.photos)} photos of {width}x{height} "
            f"(bench/phone/photos.py: the repository's photos scaled up, sensor-like noise, JPEG quality 90, "
            f"4:2:0; {min(sizes):.1f} to {max(sizes):.1f} MB; {portraits} tagged EXIF orientation 6, a "
            f"portrait shot), sent in turn, one per request, at each concurrency after a warm-up that sends "
            f"each once: {r.images_per_point} per point, or {r.min_point_s:g} s of them at the warm-up's rate "
            "where that is more (whole rounds of the photos); a point ends when every photo is answered, so "
            "server CPU per photo (user + system time of the server's processes over the point) counts no "
            "request left in flight. The photo model is the default, efficientnet_lite0 (its real weights); "
            "resnet50 has random weights, as above."
        ),
        "",
        (
            "In brackets: images/s as a multiple of convzoo's, the mean of its runs just before and just "
            "after that row (one after each peer's two rows; for the in-process rows, its first two). The peers run twice: with their users' usual image path (TorchServe's stock "
            "`image_classifier` handler; PIL.Image.open + torchvision Resize(256)/CenterCrop(224)/ToTensor/"
            "Normalize in the others: each decodes the full 12 MP) and with convzoo's preprocessing "
            "(`service.images.preprocess`, its reduced-size decode), each configured as in docs/bench-peers.md "
            "(max batch 32, 1 ms queue delay where it has one, one inference worker); convzoo runs its "
            "defaults. Raw ONNX Runtime runs in the bench's own process: C threads, each a photo at a time "
            "from its bytes to the logits, batch 1."
        ),
        "",
    ]
    for model, m in r.models.items():
        out += [*table(model, m), ""]
    out += ["What the rows say:", ""]
    for model, m in r.models.items():
        out += ratios(model, m)
    out += [
        "",
        (
            "One core's time per photo, alone (ms; the median over the photos of each one's fastest of 3 "
            "runs; bench/phone/limit.py):"
        ),
        "",
        *_costs(r),
        "",
        (
            "A full decode is the same work for every model, and so is the reduced one here (JPEG's own "
            "1/8 scale, 504x378, for a resize of 232 or 256): where the models' rows differ, they were "
            "measured minutes apart on the shared host. PIL + torchvision resizes the 12 MP image with "
            "antialiasing; convzoo's preprocessing resizes the reduced one."
        ),
        "",
        (
            "TorchServe's stock handler opens the ONNX file as an ONNX Runtime session itself (one intra-op "
            "thread per core) but would call it like a torch module: the one method TorchServe's "
            "documentation has ONNX users write, inference(), runs it (bench/peers/torchserve_stock.py); "
            "its preprocessing normalises with ImageNet's mean and std, which the photo model does not use "
            "(the cost is the same). The PIL + torchvision path does not apply EXIF orientation, as its "
            "tutorials do not: the portrait photos reach those models on their side. "
            f"Wall time of the section: {r.wall_s:.0f} s."
        ),
        END,
    ]
    return "\n".join(out)


def replace_section(text: str, new: str) -> str:
    """`text` with its phone section replaced by `new` (a whole section, markers included), or with `new`
    added where a full run puts it (before the systems' description), else before the perf_analyzer
    section, else at the end."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + new + rest.split(END, 1)[1]
    for marker in (HOW, "<!-- perf_analyzer: begin -->"):
        if marker in text:
            head, tail = text.split(marker, 1)
            return f"{head.rstrip()}\n\n{new}\n\n{marker}{tail}"
    return f"{text.rstrip()}\n\n{new}\n"


def old_section(text: str) -> str | None:
    if BEGIN in text and END in text:
        return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    return None
