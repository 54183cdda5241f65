"""docs/bench.json, docs/bench.md, docs/bench.png, docs/worker-model.md and the README block, from one
run's results: parsed once into a typed `Run`, then small renderers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.phone import report as phone_report

SMALL, LARGE = "fmnist-lenet5", "resnet50"


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")  # what a later run adds is kept in bench.json, unread here


class Point(_Result):
    """One load point over HTTP: a system at a fixed concurrency for a fixed time."""

    concurrency: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    server_cpu_ms_per_request: float | None = None


class BatchPoint(_Result):
    """Raw ONNX Runtime at one batch size; `alone_*` is batch 1 with nothing else running."""

    images_per_s: float
    p50_ms: float
    p99_ms: float
    alone_p50_ms: float | None = None
    alone_p99_ms: float | None = None


class RawResult(_Result):
    batches: dict[str, BatchPoint]
    best_batch: int
    images_per_s: float

    @property
    def best(self) -> BatchPoint:
        return self.batches[str(self.best_batch)]

    @property
    def alone_p50_ms(self) -> float:
        alone = self.batches["1"].alone_p50_ms
        assert alone is not None, "the raw run measures batch 1 alone"
        return alone


class Layout(_Result):
    label: str
    workers: int
    intra_op_threads: int
    inference_threads: int
    spinning: bool
    max_queue_delay_us: int | None = None


class SweepPoint(Point):
    """A worker-model point: a layout, batching on or off, one model."""

    layout: Layout
    batching: bool
    model: str
    raw_images_per_s: float | None = None


class Host(_Result):
    cpu: str
    cores: int
    python: str
    onnxruntime: str
    load_average_at_start: list[float]
    load_average_at_end: list[float]


class ServerSettings(_Result):
    workers: int = 1
    front_processes: int = 0  # resolved: the default's count on the bench's host
    intra_op_threads: int
    inference_threads: int
    intra_op_spinning: bool = False
    preprocess_threads: int
    max_batch_size: int
    max_queue_delay_us: int


class Systems(_Result):
    """The four systems' figures; the targets are computed from these alone."""

    raw: dict[str, RawResult]
    convzoo: dict[str, list[Point]]
    naive: dict[str, list[Point]]
    bare: list[Point]


class Target(BaseModel):
    target: str
    value: float
    required: str
    met: bool
    figures: str


class Run(Systems):
    date: str
    host: Host
    settings: ServerSettings
    load_generator: str
    seconds_per_point: dict[str, float]
    wall_s: float
    bare_python_loadgen: list[Point] | None = None
    worker_model: list[SweepPoint] | None = None
    phone: phone_report.PhoneRun | None = None
    targets: list[Target] = []


def _at(rows: list[Point], concurrency: int) -> Point:
    return next(r for r in rows if r.concurrency == concurrency)


def _target(target: str, value: float, required: str, met: bool, figures: str) -> Target:
    return Target(target=target, value=round(value, 3), required=required, met=met, figures=figures)


def targets(r: Systems) -> list[Target]:
    raw = r.raw[LARGE]
    conv = r.convzoo[LARGE]
    naive_best = max(x.images_per_s for x in r.naive[LARGE])
    c8 = _at(conv, 8).images_per_s
    small32 = _at(r.convzoo[SMALL], 32).images_per_s
    bare32 = _at(r.bare, 32).images_per_s
    c1 = _at(conv, 1).p50_ms
    gap = c1 - raw.alone_p50_ms
    return [
        _target(
            "resnet50: convzoo at c8 / raw ONNX Runtime (a), best batch",
            c8 / raw.images_per_s,
            ">= 0.85",
            c8 / raw.images_per_s >= 0.85,
            f"{c8:.1f} / {raw.images_per_s:.1f} images/s",
        ),
        _target(
            "resnet50: convzoo at c8 / naive PyTorch endpoint (c), its best concurrency",
            c8 / naive_best,
            ">= 2",
            c8 / naive_best >= 2,
            f"{c8:.1f} / {naive_best:.1f} images/s",
        ),
        _target(
            "resnet50: convzoo c1 p50 - raw batch-1 p50",
            gap,
            "<= 3 ms",
            gap <= 3.0,
            f"{c1:.2f} - {raw.alone_p50_ms:.2f} ms",
        ),
        _target(
            "fmnist-lenet5: convzoo requests/s at c32 / bare route (d) at c32",
            small32 / bare32,
            ">= 0.5",
            small32 / bare32 >= 0.5,
            f"{small32:.0f} / {bare32:.0f} requests/s",
        ),
    ]


def _targets_table(r: Run) -> list[str]:
    return [
        "| Target | Measured | Required | Met |",
        "|---|---|---|---|",
        *[
            f"| {t.target} | {t.value:.3g} ({t.figures}) | {t.required} | {'yes' if t.met else '**no**'} |"
            for t in r.targets
        ],
    ]


def _row(
    system: str, model: str, point: str, images_per_s: float, p50: float, p99: float, cpu: float | None = None
) -> str:
    cpu_text = f"{cpu:.2f}" if cpu is not None else ""
    if math.isnan(images_per_s):  # a latency-only row
        return f"| {system} | {model} | {point} | | {p50:.2f} | {p99:.2f} | {cpu_text} |"
    return f"| {system} | {model} | {point} | {images_per_s:,.1f} | {p50:.2f} | {p99:.2f} | {cpu_text} |"


def _point_row(system: str, model: str, x: Point) -> str:
    return _row(
        system, model, f"c{x.concurrency}", x.images_per_s, x.p50_ms, x.p99_ms, x.server_cpu_ms_per_request
    )


def table(r: Run) -> list[str]:
    lines = [
        "| System | Model | Batch / concurrency | images/s | p50 ms | p99 ms | server CPU ms/request |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    raw_system = "(a) raw ONNX Runtime, in-process"
    for model in (LARGE, SMALL):
        raw = r.raw[model]
        label = f"{model} (random weights)" if model == LARGE else model
        for size, m in raw.batches.items():
            best = " (best)" if int(size) == raw.best_batch else ""
            lines.append(_row(raw_system, label, f"batch {size}{best}", m.images_per_s, m.p50_ms, m.p99_ms))
            if m.alone_p50_ms is not None and m.alone_p99_ms is not None:
                alone = "batch 1, one run alone"
                lines.append(_row(raw_system, label, alone, float("nan"), m.alone_p50_ms, m.alone_p99_ms))
        lines += [_point_row("(b) convzoo, HTTP", label, x) for x in r.convzoo[model]]
        if model == LARGE:
            lines += [_point_row("(c) naive FastAPI + PyTorch eager", label, x) for x in r.naive[LARGE]]
    lines += [_point_row("(d) bare FastAPI, constant JSON", "none (28x28 PNG body)", x) for x in r.bare]
    return lines


def sweep_table(rows: list[SweepPoint]) -> list[str]:
    lines = [
        (
            "| Model | Layout | Batching | Concurrency | images/s | p50 ms | p99 ms | server CPU ms/request "
            "| raw limit images/s |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for x in rows:
        raw = f"{x.raw_images_per_s:.1f}" if x.raw_images_per_s else ""
        lines.append(
            f"| {x.model} | {x.layout.label} | {'on' if x.batching else 'off'} | "
            f"{x.concurrency} | {x.images_per_s:,.1f} | {x.p50_ms:.2f} | {x.p99_ms:.2f} | "
            f"{x.server_cpu_ms_per_request or 0:.2f} | {raw} |"
        )
    return lines


def markdown(r: Run) -> str:
    h, s = r.host, r.settings
    out = [
        "# Benchmark",
        "",
        (
            "Generated by `make bench` (`python -m bench`); the figures below are from **one run** on "
            f"{r.date}, on a {h.cores}-vCPU host ({h.cpu}), no GPU, loopback only. "
            f"Load average before/after: {h.load_average_at_start[0]:.2f} / {h.load_average_at_end[0]:.2f}. "
            f"onnxruntime {h.onnxruntime}, Python {h.python}. Raw results: `docs/bench.json`; plot: `docs/bench.png`."
        ),
        "",
        (
            f"Server settings (the service defaults): {s.workers} process(es) holding the models, "
            f"{s.front_processes} front process(es) taking the connections (docs/architecture.md), intra-op threads "
            f"{s.intra_op_threads or 'one per usable core (0)'}, {s.inference_threads} inference thread(s) per model, "
            f"ONNX Runtime spinning {'on' if s.intra_op_spinning else 'off'}, "
            f"{s.preprocess_threads} preprocess threads, max batch {s.max_batch_size}, queue delay "
            f"{s.max_queue_delay_us} us. Load generator: `{r.load_generator}` in its own process, "
            f"{r.seconds_per_point[SMALL]:g} s per point ({r.seconds_per_point[LARGE]:g} s for resnet50) after a "
            "1 s warm-up; one request carries one image."
        ),
        "",
        (
            "**resnet50 is exported with random weights** (`python -m export build --zoo imagenet --models resnet50 "
            "--random-weights`): speed does not depend on the weights. Bodies: a 500x375 JPEG (synthetic, photo-like, "
            "quality 90) for resnet50, a Fashion-MNIST test image as a 28x28 PNG for fmnist-lenet5 and the bare route."
        ),
        "",
        *table(r),
        "",
        f"## Targets ({h.cores}-core CPU, ratios from this run)",
        "",
        *_targets_table(r),
        "",
    ]
    if r.bare_python_loadgen:
        wrk32 = _at(r.bare, 32)
        py32 = r.bare_python_loadgen[0]
        out += [
            "## The load generator",
            "",
            (
                f"wrk (C, one thread) drives every point above. The same bare route at c32 driven by the Python "
                f"generator (`bench/pyload.py`, httpx + asyncio in its own process) reads {py32.images_per_s:,.0f} "
                f"requests/s against wrk's {wrk32.images_per_s:,.0f}: on {h.cores} cores a Python client takes CPU from the "
                "server it measures, so it would understate the fast paths. It is only the fallback where wrk is missing."
            ),
            "",
        ]
    if r.worker_model:
        out += [
            "## Worker model sweep",
            "",
            "See docs/worker-model.md for the choice made from these rows.",
            "",
            *sweep_table(r.worker_model),
            "",
        ]
    if r.phone:
        out += [phone_report.section(r.phone), ""]
    out += [
        "## How the systems are run",
        "",
        (
            "- (a) `bench/raw.py`: the service's own session code (`service.compute.runtime.load_model`) with the same "
            "CONVZOO_* settings, in-process, no HTTP: per batch size, the service's inference threads run batches "
            "back to back for a fixed time; images/s is summed over them. Batch latency p50/p99 is under that load; "
            '"one run alone" is batch 1 with nothing else running, the figure the single-request target uses.'
        ),
        (
            "- (b) `python -m service` (uvicorn, the service defaults), POST /classify with a raw image body, "
            "driven by wrk at a fixed concurrency (connections) for a fixed time. Server CPU ms/request: user + "
            "system CPU of the server's processes during the window, divided by the requests answered."
        ),
        (
            "- (c) `bench/naive_app.py`: what a tutorial would write: an `async def` FastAPI handler that decodes "
            "with PIL, applies torchvision's Resize/CenterCrop/ToTensor/Normalize and runs torchvision's resnet50 "
            "(random weights) in eager mode under `torch.no_grad()`, inline, so one request at a time; torch uses "
            "its default threads (one per core). Same uvicorn settings, one process."
        ),
        (
            "- (d) `bench/bare_app.py`: a FastAPI POST route that returns constant JSON without touching the body, "
            "under the same uvicorn settings and processes as (b): the floor for per-request cost."
        ),
        "",
        "## GPU",
        "",
        (
            "The GPU path (IOBinding on the CUDA provider, `service/compute/runtime.py`; the export's float16 variant, "
            "`python -m export build --zoo imagenet --fp16`) has a prepared benchmark, `bench/gpu_bench.sh`: "
            "resnet50 plain run() against IOBinding and FP32 against FP16 at batch 1/8/32/64, FP16 parity, and "
            "convzoo over HTTP on CUDA, written to docs/bench-gpu.md. It has **not been run**: no GPU machine was "
            "available for this work, so there are no GPU figures here. `bench/gpu_bench.sh --dry-run-on-cpu` "
            "checks the script's steps on a CPU host."
        ),
        "",
        f"Wall time of the run: {r.wall_s:.0f} s. Rerun: `make bench`.",
        "",
    ]
    return "\n".join(out)


def _bars(r: Run, model: str) -> list[tuple[str, float, str]]:
    """(label, images/s, colour) of the plot's bars for one model."""
    raw = r.raw[model]
    bars = [(f"raw ORT\nbatch {raw.best_batch}", raw.images_per_s, "#555555")]
    bars += [(f"convzoo\nc{x.concurrency}", x.images_per_s, "#1f77b4") for x in r.convzoo[model]]
    if model == LARGE:
        bars += [(f"naive torch\nc{x.concurrency}", x.images_per_s, "#d62728") for x in r.naive[LARGE]]
    else:
        bars += [(f"bare route\nc{x.concurrency}", x.images_per_s, "#2ca02c") for x in r.bare]
    return bars


def plot(r: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, model in zip(axes, (LARGE, SMALL), strict=True):
        labels, values, colours = (list(column) for column in zip(*_bars(r, model), strict=True))
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_ylabel("images/s (requests/s for the bare route)")
        title = f"{model} (random weights)" if model == LARGE else model
        ax.set_title(title)
        if model == SMALL:
            ax.set_yscale("log")
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:,.0f}" if v >= 100 else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"convzoo benchmark, one run, {r.host.cores} vCPU {r.host.cpu}, {r.date[:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# A section of bench.md that another tool writes (`make bench-perf-analyzer`); a new run keeps it.
PERF_ANALYZER_BEGIN, PERF_ANALYZER_END = "<!-- perf_analyzer: begin -->", "<!-- perf_analyzer: end -->"


def keeping_other_sections(new: str, old: str) -> str:
    """The new bench.md text, with the section another tool wrote into the old one appended again, and
    the old phone-photo section where this run has none."""
    new = new.rstrip("\n") + "\n"
    phone = phone_report.old_section(old)
    if phone is not None and phone_report.old_section(new) is None:
        new = phone_report.replace_section(new, phone)
    if PERF_ANALYZER_BEGIN not in old or PERF_ANALYZER_END not in old:
        return new
    section = old[old.index(PERF_ANALYZER_BEGIN) : old.index(PERF_ANALYZER_END) + len(PERF_ANALYZER_END)]
    return f"{new}\n{section}\n"


def write(results: dict[str, Any], out: Path) -> None:
    """The run's raw results (kept as measured in bench.json, with the targets) and everything rendered;
    a run without the phone-photo section keeps the last one's."""
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "bench.json"
    if "phone" not in results and previous.is_file():
        phone = json.loads(previous.read_text()).get("phone")
        if phone is not None:
            results["phone"] = phone
    run = Run.model_validate(results)
    run.targets = targets(run)
    results["targets"] = [t.model_dump() for t in run.targets]
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = out / "bench.md"
    md.write_text(keeping_other_sections(markdown(run), md.read_text() if md.is_file() else ""))
    plot(run, out / "bench.png")
    if run.worker_model:
        (out / "worker-model.md").write_text(worker_model_md(run))


def write_phone(phone: dict[str, Any], out: Path) -> None:
    """The phone-photo section alone (`python -m bench --only phone`): bench.json's "phone" and its
    section of bench.md replaced, the rest of both left as the last full run wrote them."""
    out.mkdir(parents=True, exist_ok=True)
    section = phone_report.section(phone_report.PhoneRun.model_validate(phone))
    data = out / "bench.json"
    results = json.loads(data.read_text()) if data.is_file() else {}
    results["phone"] = phone
    data.write_text(json.dumps(results, indent=2) + "\n")
    md = out / "bench.md"
    md.write_text(phone_report.replace_section(md.read_text() if md.is_file() else "# Benchmark\n", section))


def _label(x: SweepPoint) -> str:
    return f"{x.layout.label}, batching {'on' if x.batching else 'off'}"


def _is_default(x: SweepPoint, r: Run) -> bool:
    lay, s = x.layout, r.settings
    intra = s.intra_op_threads or r.host.cores  # 0: automatic, one per usable core (docs/threads.md)
    return (
        lay.max_queue_delay_us is None
        and x.batching
        and lay.workers == s.workers
        and lay.intra_op_threads == intra
        and lay.inference_threads == s.inference_threads
        and lay.spinning == s.intra_op_spinning
    )


def _verdict(rows: list[SweepPoint], r: Run, what: str, key: str, higher: bool) -> str:
    rows = [x for x in rows if x.requests > 0]  # a point with no answer in its window has no figures
    if not rows:
        return f"- {what}: no point answered within its window."

    def value(x: SweepPoint) -> float:
        return x.images_per_s if key == "images_per_s" else x.p50_ms

    best = (max if higher else min)(rows, key=value)
    default = next((x for x in rows if _is_default(x, r)), None)
    unit = "images/s" if key == "images_per_s" else "ms p50"
    text = f"- {what}: best in this run **{_label(best)}** ({value(best):,.1f} {unit})"
    if default is not None:
        d, b = value(default), value(best)
        share = (d / b if higher else b / d) if d else 0.0
        text += f"; the default: {d:,.1f} {unit} ({share:.0%} of the best)"
    return text + "."


def worker_model_md(r: Run) -> str:
    rows = r.worker_model or []
    s, h = r.settings, r.host
    large_c8 = [x for x in rows if x.model == LARGE and x.concurrency == 8]
    large_c1 = [x for x in rows if x.model == LARGE and x.concurrency == 1]
    small = [x for x in rows if x.model == SMALL]
    return "\n".join(
        [
            "# Worker model",
            "",
            (
                "How convzoo splits the cores: uvicorn worker processes x ONNX Runtime intra-op threads, the number of "
                "inference threads per model, dynamic batching on or off, and whether idle ONNX Runtime threads spin. "
                "Measured by `make bench` (its worker-model sweep, written to docs/bench.json), in **one run** on "
                f"{r.date}, {h.cores} vCPU ({h.cpu}), load average at start "
                f"{h.load_average_at_start[0]:.2f}: a small model (fmnist-lenet5, 28x28 PNG bodies, c32) and a "
                "large one (resnet50 with random weights, 500x375 JPEG bodies, c1 and c8), over HTTP with wrk."
            ),
            "",
            "## The default",
            "",
            (
                f"`service/core/settings.py`: `workers={s.workers}`, `intra_op_threads={s.intra_op_threads}` "
                f"(automatic: one per usable core, {h.cores} here), `inference_threads={s.inference_threads}`, "
                f"`intra_op_spinning={str(s.intra_op_spinning).lower()}`, batching on "
                f"(`max_batch_size={s.max_batch_size}`, `max_queue_delay_us={s.max_queue_delay_us}`), "
                f"`preprocess_threads={s.preprocess_threads}`: one process, one inference thread per model whose "
                "session uses both cores (two intra-op threads)."
            ),
            "",
            (
                "How it was chosen: the latency of a lone request first (what an interactive client sees), "
                "then images/s under load close to the best layout's, with one copy of each model in memory. "
                "A server that only ever sees heavy traffic of tiny models can trade the first for two "
                "processes (`CONVZOO_WORKERS=2`, `CONVZOO_INTRA_OP_THREADS=1`, "
                "`CONVZOO_INFERENCE_THREADS=1`); the rows below measure that too."
            ),
            "",
            "What this run says about it:",
            "",
            _verdict(large_c8, r, "resnet50 throughput at c8", "images_per_s", True),
            _verdict(large_c1, r, "resnet50 single-request latency (c1)", "p50_ms", False),
            _verdict(small, r, "fmnist-lenet5 requests/s at c32", "images_per_s", True),
            "",
            "## Why",
            "",
            (
                "- **Spinning off.** After each operator, ONNX Runtime's idle intra-op threads busy-wait for the next one. "
                "In a server the cores are also needed by decoding, preprocessing and the event loop, and a spinning "
                "thread takes them: compare the spinning row's server CPU per request with the default's. "
                "`CONVZOO_INTRA_OP_SPINNING=false` is the default."
            ),
            (
                "- **One inference thread, two intra-op threads.** A lone request gets both cores, so its latency is "
                "that of intra-op 2; the `x 1 thread` layouts nearly double it. Under load the batches follow each "
                "other on that thread with both cores busy. Two inference threads (each batch on a share of the "
                "queue, in parallel) measured no faster on 2 cores: compare the `2 inference threads` rows. They "
                "stay available (`CONVZOO_INFERENCE_THREADS`) for hosts where one run does not fill the cores."
            ),
            (
                "- **One process.** Two processes (`CONVZOO_WORKERS=2`) give each its own GIL, but also their own copy "
                "of every model, their own batch queues (each sees half the traffic, so smaller batches) and their own "
                "thread pools competing for the same 2 cores."
            ),
            (
                "- **Batching on.** For the small model a batch amortises the per-call cost of ONNX Runtime and the "
                "thread hand-off; for resnet50 on a CPU, images/s barely depends on the batch size (the compute is "
                "the cost) and the 1 ms queue delay is small next to a 25+ ms forward pass."
            ),
            (
                "- **Queue delay.** `max_queue_delay_us` (default 1000) lets a batch fill while the inference "
                "threads are idle; under load the queue fills by itself while a batch computes, so the delay "
                "mostly adds to the latency of a lone request. The `queue delay 0` rows show both sides: c1 "
                "latency and the small model's requests/s, where batches then stay small."
            ),
            (
                "- **Preprocessing and inference do not starve each other.** Decoding and preprocessing run on their "
                "own threads (`CONVZOO_PREPROCESS_THREADS`), inference on its own, the event loop only moves bytes; "
                "ONNX Runtime releases the GIL while it computes, and without spinning it leaves idle cores to the "
                "preprocessing."
            ),
            "",
            "## The rows",
            "",
            "Raw limit: the same processes, threads and inference threads running batch 8 in-process, no HTTP.",
            "",
            *sweep_table(rows),
            "",
            "Reproduce: `make bench` (about 8 minutes on 2 cores); the sweep alone is `bench.__main__.sweep`.",
            "",
        ]
    )


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def readme_block(results: dict[str, Any]) -> str:
    """The figures README.md quotes: the headline points and the targets, from the same run."""
    r = Run.model_validate(results)
    r.targets = r.targets or targets(r)
    raw, conv = r.raw[LARGE], r.convzoo[LARGE]
    naive_best = max(r.naive[LARGE], key=lambda x: x.images_per_s)
    lines = [
        BEGIN,
        (
            f"From `make bench`, one run on {r.date[:10]}, {r.host.cores} vCPU ({r.host.cpu}), no GPU; "
            "resnet50 with random weights (speed does not depend on them). Full table: "
            "[docs/bench.md](docs/bench.md), worker model: [docs/worker-model.md](docs/worker-model.md)."
        ),
        "",
        "| | images/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        (
            f"| resnet50, raw ONNX Runtime in-process, batch {raw.best_batch} | {raw.images_per_s:.1f} | "
            f"{raw.best.p50_ms:.1f} | {raw.best.p99_ms:.1f} |"
        ),
        *[_headline(f"resnet50, convzoo over HTTP, c{x.concurrency}", x, ".1f") for x in conv],
        _headline(f"resnet50, naive FastAPI + PyTorch eager, c{naive_best.concurrency}", naive_best, ".1f"),
        *[
            _headline(f"fmnist-lenet5, convzoo over HTTP, c{x.concurrency}", x, ",.0f")
            for x in r.convzoo[SMALL]
        ],
        *[_headline(f"bare FastAPI route (constant JSON), c{x.concurrency}", x, ",.0f") for x in r.bare],
        "",
        *_targets_table(r),
        END,
    ]
    return "\n".join(lines)


def _headline(label: str, x: Point, rate: str) -> str:
    return f"| {label} | {x.images_per_s:{rate}} | {x.p50_ms:.1f} | {x.p99_ms:.1f} |"


def update_readme(results: dict[str, Any], readme: Path) -> bool:
    """Replace the block between the bench markers of README.md; False when it has none."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + readme_block(results) + tail)
    return True
