"""`make bench-monitor` (`python -m bench.monitor`): what the monitor catches, and what it costs.

1. Drift. A Fashion-MNIST model's reference is built from test images 0-4,999; its answers on the other
   5,000 (unshifted), and on them blurred, darkened, or of two classes only, go one by one through the
   service's own monitor (service/monitor/live.py: the same rows, window and statistics as a live
   request). Detection: answers from the start of a shift until the window is judged drifting (the window
   starting full of unshifted answers). False alarms: the share of non-overlapping windows of unshifted
   answers, in shuffled orders, judged drifting.
2. Out of distribution. scikit-image's photos and random crops of them, through the service's decoding
   and preprocessing, flagged unusual at the reference's threshold; the false-positive rate on the held-out
   test images.
3. Cost. The service (fronts, defaults) with the monitor on and off, both running, loaded in turn
   (interleaved rounds of POST /classify of one Fashion-MNIST test image at c8): images/s and server CPU
   per request.

Writes docs/bench-monitor.md and docs/bench-monitor.json. `--quick` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from skimage import data as photos

from bench import load, servers
from bench.load import Body
from export import reference as export_reference
from export.fashion.data import load_split
from service.core.registry import ModelEntry, load_registry
from service.images.preprocess import decode_upload, to_tensor
from service.monitor import reference
from service.monitor.live import Monitor
from service.monitor.reference import References
from service.monitor.signals import Seen, Signals

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fmnist-lenet5"
WINDOW = 200  # the service's default CONVZOO_MONITOR_WINDOW
PHOTOS = [
    "astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "text",
]  # fmt: skip
SHIFTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "blurred (Gaussian, radius 1.5)": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
    "darkened (pixels halved)": lambda im: im.point(lambda v: v // 2),
}


def _signals(entry: ModelEntry, images: list[Image.Image]) -> Signals:
    tensors = np.stack([to_tensor(im, entry.preprocessing) for im in images])
    return export_reference.signals(entry, ROOT / "models", tensors)


def _take(s: Signals, idx: np.ndarray) -> Signals:
    return Signals(*(getattr(s, f)[idx] for f in Signals.__dataclass_fields__))


def _rows(entry: ModelEntry, s: Signals) -> list[Seen]:
    return [
        Seen(entry.name, entry.version, int(s.classes[i]), float(s.confidence[i]), float(s.entropy[i]),
             float(s.energy[i]), float(s.border[i]), float(s.brightness[i]), -1.0, -1, 28, 28, 1, 0)
        for i in range(len(s.classes))
    ]  # fmt: skip


class Replay:
    """The service's monitor, fed rows as requests would feed it."""

    def __init__(self, entry: ModelEntry, ref: reference.Reference, work: Path) -> None:
        from prometheus_client import CollectorRegistry

        self.entry = entry
        references = References(work, work / "captured")
        references.put(entry, ref)
        self.monitor = Monitor(
            references, lambda _: entry, lambda _: [str(i) for i in range(10)],
            window=WINDOW, min_answers=WINDOW, registry=CollectorRegistry(),
        )  # fmt: skip

    def drifting(self) -> bool:
        found = self.monitor.statistics(self.entry)
        return found is not None and any(s.exceeded for s in found[0])

    def exceeded(self) -> list[str]:
        found = self.monitor.statistics(self.entry)
        return [s.name for s in found[0] if s.exceeded] if found else []


def drift_figures(entry: ModelEntry, quick: bool) -> dict[str, Any]:
    split = load_split("test")
    images = [Image.fromarray(a) for a in split.images]
    ref = reference.build(
        entry.name, entry.version, "test images 0-4,999", _signals(entry, images[:5000]), 10
    )
    held = np.arange(5000, 10_000)
    base = _signals(entry, images[5000:])
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    # false alarms: non-overlapping windows of unshifted answers, in shuffled orders
    orders = 2 if quick else 8
    windows = alarms = 0
    for _ in range(orders):
        replay = Replay(entry, ref, work)
        order = rng.permutation(5000)
        for start in range(0, 5000 - WINDOW + 1, WINDOW):
            replay.monitor.ingest(_rows(entry, _take(base, order[start : start + WINDOW])))
            windows += 1
            alarms += replay.drifting()
    shifted: dict[str, Signals] = {
        name: _signals(entry, [f(images[i]) for i in held[:1000]]) for name, f in SHIFTS.items()
    }
    two = np.where(split.labels[5000:] < 2)[0]
    shifted["two classes (T-shirt/top, Trouser)"] = _take(base, two)
    detections: dict[str, Any] = {}
    for name, s in shifted.items():
        delays, which = [], set()
        for _ in range(3 if quick else 10):
            replay = Replay(entry, ref, work)
            replay.monitor.ingest(_rows(entry, _take(base, rng.permutation(5000)[:WINDOW])))
            order = rng.permutation(len(s.classes))
            delay = None
            for k, i in enumerate(order, 1):
                replay.monitor.ingest(_rows(entry, _take(s, np.array([i]))))
                if replay.drifting():
                    delay = k
                    which.update(replay.exceeded())
                    break
            delays.append(delay)
        found = [d for d in delays if d is not None]
        detections[name] = {
            "runs": len(delays),
            "detected": len(found),
            "median_requests": statistics.median(found) if found else None,
            "max_requests": max(found) if found else None,
            "statistics": sorted(which),
        }
    return {
        "windows": windows,
        "false_alarms": alarms,
        "detections": detections,
        "reference": ref,
        "base": base,
    }


def _photo_images(quick: bool) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    out = []
    for name in PHOTOS:
        if not hasattr(photos, name):
            continue
        image = Image.fromarray(getattr(photos, name)())
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=90)
        whole = decode_upload(buf.getvalue(), max_pixels=40_000_000).image
        out.append(whole)
        for _ in range(2 if quick else 10):  # random crops: a tenth to the whole of each side
            w, h = whole.size
            cw, ch = int(w * rng.uniform(0.3, 1.0)), int(h * rng.uniform(0.3, 1.0))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out.append(whole.crop((x, y, x + cw, y + ch)))
    return out


def ood_figures(entry: ModelEntry, ref: reference.Reference, base: Signals, quick: bool) -> dict[str, Any]:
    photo = _signals(entry, _photo_images(quick))
    flagged = ref.scores(photo) > ref.ood_threshold
    fpr = ref.scores(base) > ref.ood_threshold
    return {
        "photos": len(flagged),
        "photos_flagged": int(flagged.sum()),
        "held_out": len(fpr),
        "held_out_flagged": int(fpr.sum()),
        "threshold": ref.ood_threshold,
    }


def cost_figures(rounds: int, seconds: float, concurrency: int) -> dict[str, Any]:
    body_path = Path(tempfile.mkdtemp(prefix="bench-monitor-")) / "fashion.png"
    buf = io.BytesIO()
    Image.fromarray(load_split("test").images[0]).save(buf, "PNG")
    body_path.write_bytes(buf.getvalue())
    body = Body(body_path, "image/png")
    tool = load.available_tool()
    results: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    logs = Path(tempfile.mkdtemp(prefix="bench-monitor-logs-"))
    ports = {"on": servers.free_port(), "off": servers.free_port()}

    def env(mode: str) -> dict[str, str]:
        return servers.clean_env(
            CONVZOO_REGISTRY_PATH=str(ROOT / "registry.yaml"), CONVZOO_MODELS_DIR=str(ROOT / "models"),
            CONVZOO_PRELOAD=MODEL, CONVZOO_HOST=servers.HOST, CONVZOO_PORT=str(ports[mode]),
            CONVZOO_MONITOR=str(mode == "on").lower(), CONVZOO_LOG_LEVEL="warning",
        )  # fmt: skip

    cmd = [sys.executable, "-m", "service"]
    with (
        servers.serve(cmd, env("on"), "/health/ready", ports["on"], logs / "on.log") as on,
        servers.serve(cmd, env("off"), "/health/ready", ports["off"], logs / "off.log") as off,
    ):
        running = {"on": on, "off": off}
        for r in range(rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                srv = running[mode]
                url = f"{srv.url}/classify?model={MODEL}"
                load.run(url, concurrency=concurrency, seconds=1, body=body, tool=tool, warmup_s=0)
                cpu0 = srv.cpu_s()
                point = load.run(
                    url, concurrency=concurrency, seconds=seconds, body=body, tool=tool, warmup_s=0
                )
                point["server_cpu_ms_per_request"] = (srv.cpu_s() - cpu0) * 1e3 / max(point["requests"], 1)
                point["round"] = r
                results[mode].append(point)
                print(f"  round {r} monitor {mode}: {point['images_per_s']:.0f} images/s, "
                      f"{point['server_cpu_ms_per_request']:.3f} ms CPU/request", flush=True)  # fmt: skip
    ratios = [
        a["images_per_s"] / b["images_per_s"] for a, b in zip(results["on"], results["off"], strict=True)
    ]
    cpu = [
        a["server_cpu_ms_per_request"] / b["server_cpu_ms_per_request"]
        for a, b in zip(results["on"], results["off"], strict=True)
    ]
    return {"tool": tool, "concurrency": concurrency, "seconds": seconds, "points": results,
            "throughput_ratios": ratios, "cpu_ratios": cpu}  # fmt: skip


async def _inprocess(blocks: int, per_block: int) -> dict[str, Any]:
    from service.core.settings import Settings
    from service.main import create_app

    buf = io.BytesIO()
    Image.fromarray(load_split("test").images[0]).save(buf, "PNG")
    body = buf.getvalue()
    scope_base = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/classify", "raw_path": b"/classify", "root_path": "", "query_string": f"model={MODEL}".encode(),
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    cpu: dict[str, list[float]] = {"on": [], "off": []}
    own = _MonitorTime()
    apps = {}
    for mode in ("on", "off"):
        settings = Settings(
            registry_path=ROOT / "registry.yaml", models_dir=ROOT / "models", preload=[MODEL],
            monitor=mode == "on", log_level="warning", intra_op_threads=1, background_calibration=False,
        )  # fmt: skip
        apps[mode] = create_app(settings)
    async with (
        apps["on"].router.lifespan_context(apps["on"]) as state_on,
        apps["off"].router.lifespan_context(apps["off"]) as state_off,
    ):
        states = {"on": state_on or {}, "off": state_off or {}}
        for mode in ("on", "off"):
            await states[mode]["services"].manager.wait_preloaded()
        for b in range(blocks):
            for mode in ("on", "off") if b % 2 == 0 else ("off", "on"):
                started = time.process_time()
                for _ in range(per_block):
                    await apps[mode]({**scope_base, "state": dict(states[mode])}, receive, send)
                cpu[mode].append((time.process_time() - started) / per_block * 1e6)
    own.stop()
    assert set(statuses) == {200}, set(statuses)
    ratios = [a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
    monitor_us = own.seconds / max(own.calls, 1) * 1e6
    return {
        "blocks": blocks, "per_block": per_block, "cpu_us": cpu, "ratios": ratios,
        "monitor_us": monitor_us, "monitor_share": monitor_us / statistics.median(cpu["off"]),
    }  # fmt: skip


class _MonitorTime:
    """The CPU time spent inside the monitor's per-answer work (`Watch.answered`: the signals, the score,
    the row into the live monitor), measured by the thread that runs it, while installed."""

    def __init__(self) -> None:
        from service.monitor.watch import Watch

        self.seconds, self.calls = 0.0, 0
        self._original = Watch.answered
        original = self._original

        def answered(watch: Watch, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            started = time.thread_time()
            try:
                return original(watch, *args, **kwargs)
            finally:
                if watch.enabled:
                    self.seconds += time.thread_time() - started
                    self.calls += 1

        Watch.answered = answered  # type: ignore[method-assign,assignment]

    def stop(self) -> None:
        from service.monitor.watch import Watch

        Watch.answered = self._original  # type: ignore[method-assign]


def inprocess_figures(blocks: int, per_block: int) -> dict[str, Any]:
    """The service alone (no fronts), monitor on and off, in this one process: the CPU time (every
    thread: the event loop, the batcher, ONNX Runtime) of blocks of sequential requests driven straight
    into the ASGI app, interleaved. Less noisy than throughput on a shared host: only this process's
    CPU counts."""
    import logging

    logging.disable(logging.WARNING)
    return asyncio.run(_inprocess(blocks, per_block))


def render(r: dict[str, Any]) -> str:
    d, o, c = r["drift"], r["ood"], r["cost"]
    worst = max((v["max_requests"] or 10**9) for v in d["detections"].values())
    all_found = all(v["detected"] == v["runs"] for v in d["detections"].values())
    false_rate = d["false_alarms"] / d["windows"]
    tpr = o["photos_flagged"] / o["photos"]
    fpr = o["held_out_flagged"] / o["held_out"]
    throughput = statistics.median(c["throughput_ratios"])
    ip = r["inprocess"]
    cpu_ratio = statistics.median(ip["ratios"])
    lines = [
        "# What the monitor catches, and what it costs",
        "",
        f"`make bench-monitor` (`python -m bench.monitor`), {r['date']}, model `{MODEL}`, window {WINDOW}; "
        "how it measures: bench/monitor.py's docstring; what is measured: docs/monitoring.md.",
        "",
        "| target | required | measured | met |",
        "|---|---|---|---|",
        f"| each shift detected | within 500 requests | worst run {worst} requests | {'yes' if all_found and worst <= 500 else 'no'} |",
        f"| false alarms, unshifted test images | < 1% of windows | {d['false_alarms']} of {d['windows']} windows ({false_rate:.1%}) | {'yes' if false_rate < 0.01 else 'no'} |",
        f"| photos flagged unusual | >= 95% | {o['photos_flagged']} of {o['photos']} ({tpr:.1%}) | {'yes' if tpr >= 0.95 else 'no'} |",
        f"| at a false-positive rate on its own test images | <= 5% | {o['held_out_flagged']} of {o['held_out']} held-out ({fpr:.1%}) | {'yes' if fpr <= 0.05 else 'no'} |",
        f"| throughput, monitor on / off | within 2% | median ratio {throughput:.3f} over {len(c['throughput_ratios'])} interleaved rounds (shared host: see below) | {'yes' if throughput >= 0.98 else 'no'} |",
        f"| CPU per request, monitor on / off, in process | within 2% | median ratio {cpu_ratio:.3f} over {ip['blocks']} interleaved blocks | {'yes' if cpu_ratio <= 1.02 else 'no'} |",
        f"| the monitor's own CPU per request | within 2% | {ip['monitor_us']:.1f} us, {ip['monitor_share']:.1%} of a request's CPU (monitor off) | {'yes' if ip['monitor_share'] <= 0.02 else 'no'} |",
        "",
        "## Drift: requests from the start of a shift until the window is judged drifting",
        "",
        "| shift | runs | detected | median | worst | statistics past their threshold |",
        "|---|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for name, v in d["detections"].items():
        lines.append(
            f"| {name} | {v['runs']} | {v['detected']} | {v['median_requests']} | {v['max_requests']} | "
            f"{', '.join(v['statistics'])} |"
        )
    lines += [
        "",
        "## Cost: the service with its defaults (front processes), monitor on and off, interleaved",
        "",
        f"POST /classify of one Fashion-MNIST test image (PNG) at c{c['concurrency']}, {c['seconds']} s per point, "
        f"load from `{c['tool']}` on the same host. The host is shared with other work, which moves these "
        "figures by far more than 2% from one run to the next (the ratios below range widely both ways): "
        "they bound the cost coarsely; the in-process figures below measure it.",
        "",
        "| round | on: images/s | off: images/s | ratio | on: server CPU ms/request | off | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for a, b in zip(c["points"]["on"], c["points"]["off"], strict=True):
        lines.append(
            f"| {a['round']} | {a['images_per_s']:.0f} | {b['images_per_s']:.0f} | "
            f"{a['images_per_s'] / b['images_per_s']:.3f} | {a['server_cpu_ms_per_request']:.3f} | "
            f"{b['server_cpu_ms_per_request']:.3f} | "
            f"{a['server_cpu_ms_per_request'] / b['server_cpu_ms_per_request']:.3f} |"
        )
    lines += [
        "",
        f"Median ratio of server CPU per request: {statistics.median(c['cpu_ratios']):.3f}.",
        "",
        "## Cost in process: CPU per request, monitor on and off, interleaved",
        "",
        f"The service alone (no fronts) in the bench's own process, {ip['per_block']} sequential requests per "
        "block driven straight into the ASGI app (hot path, request log, batcher, ONNX Runtime), the process's "
        "CPU time over each block (only its own, so the other work on the host moves it less).",
        "",
        "| block | on: CPU us/request | off: CPU us/request | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for i, (a, b) in enumerate(zip(ip["cpu_us"]["on"], ip["cpu_us"]["off"], strict=True)):
        lines.append(f"| {i} | {a:.0f} | {b:.0f} | {a / b:.3f} |")
    lines += [
        "",
        f"Median ratio: {cpu_ratio:.3f}. The monitor's own work, timed by the thread that runs it "
        f"(`Watch.answered`: signals, score, the row into the live monitor): {ip['monitor_us']:.1f} us per "
        f"request, {ip['monitor_share']:.1%} of the median CPU per request with the monitor off.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer orders, crops and rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-monitor.md")
    a = parser.parse_args()
    entry = load_registry(ROOT / "registry.yaml").get(MODEL)
    print("drift ...", flush=True)
    d = drift_figures(entry, a.quick)
    print("out of distribution ...", flush=True)
    o = ood_figures(entry, d.pop("reference"), d.pop("base"), a.quick)
    print("cost in process ...", flush=True)
    ip = inprocess_figures(4 if a.quick else 12, 300 if a.quick else 1000)
    print(f"  CPU ratios {[round(x, 3) for x in ip['ratios']]}", flush=True)
    print("cost ...", flush=True)
    rounds = a.rounds or (2 if a.quick else 6)
    c = cost_figures(rounds, a.seconds or (3.0 if a.quick else 5.0), 8)
    result = {"date": dt.date.today().isoformat(), "drift": d, "ood": o, "cost": c, "inprocess": ip}
    a.out.write_text(render(result), encoding="utf-8")
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(a.out.read_text())


if __name__ == "__main__":
    main()
