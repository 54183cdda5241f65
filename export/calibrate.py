"""Re-measure every available model's latency and throughput on this host with ONNX Runtime, and write
the figures back to the registry with the host's description. Needs no PyTorch."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.compute import host
from service.compute.runtime import LoadedModel, RuntimeUnavailable, load_model
from service.core.artifacts import ArtifactProblem, checked_artifact
from service.core.registry import Latency, ModelEntry, Registry, load_registry, save_registry
from service.core.settings import Providers, Settings

MIN_SINGLE_RUNS = 20
MIN_BATCH_RUNS = 3
WARM_UP_RUNS = 5


@dataclass(frozen=True)
class Outcome:
    name: str
    latency: Latency | None  # None: skipped
    reason: str | None = None  # why it was skipped


def measure(model: LoadedModel, *, seconds: float, batch_size: int, threads: int) -> Latency:
    """Batch-1 p50/p99 for about half of `seconds`, then throughput at `batch_size` for the other half."""
    one = np.random.default_rng(0).standard_normal((1, *model.sample_shape)).astype(np.float32)
    for _ in range(WARM_UP_RUNS):
        model.run(one)
    times: list[float] = []
    stop = time.perf_counter() + seconds / 2
    while len(times) < MIN_SINGLE_RUNS or time.perf_counter() < stop:
        t0 = time.perf_counter_ns()
        model.run(one)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    batch = np.repeat(one, batch_size, axis=0)
    model.run(batch)
    runs, start = 0, time.perf_counter()
    while runs < MIN_BATCH_RUNS or time.perf_counter() - start < seconds / 2:
        model.run(batch)
        runs += 1
    elapsed = time.perf_counter() - start
    ms = np.asarray(times)
    return Latency(
        p50_ms=round(float(np.percentile(ms, 50)), 4),
        p99_ms=round(float(np.percentile(ms, 99)), 4),
        throughput_ips=round(runs * batch_size / elapsed, 1),
        batch_size=batch_size,
        host=host.describe(provider=model.providers[0], intra_op_threads=threads),
        date=dt.datetime.now(dt.UTC).date(),
    )


def calibrate_entry(
    entry: ModelEntry, models_dir: Path, settings: Settings, *, seconds: float, batch_size: int
) -> Outcome:
    try:
        path = checked_artifact(entry, models_dir)
        model = load_model(path, entry, settings, max_batch_size=batch_size)
    except (ArtifactProblem, RuntimeUnavailable) as exc:
        return Outcome(entry.name, None, str(exc))
    except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's own errors: one bad artifact never stops the others
        return Outcome(entry.name, None, f"ONNX Runtime could not load it ({type(exc).__name__})")
    size = min(batch_size, model.max_batch_size)  # a graph with a fixed batch axis limits it
    return Outcome(
        entry.name, measure(model, seconds=seconds, batch_size=size, threads=settings.intra_op_threads)
    )


def calibrate(
    *,
    registry_path: Path,
    models_dir: Path,
    names: list[str] | None = None,
    seconds: float = 1.0,
    threads: int = 1,
    providers: Providers = "cpu",
    batch_size: int = 32,
) -> list[Outcome]:
    """Measure the named models (default: all) and write each measured latency back to the registry;
    models that cannot run here keep their previous figures and are reported as skipped."""
    if seconds <= 0 or threads < 0 or batch_size < 1:
        raise ValueError("seconds and batch size must be positive, threads at least 0")
    registry = load_registry(registry_path)
    for name in names or []:
        registry.get(name)  # ValueError(f"Unknown model {name}")
    settings = Settings(
        registry_path=registry_path, models_dir=models_dir, intra_op_threads=threads, providers=providers
    )
    chosen = [m for m in registry.models if not names or m.name in names]
    outcomes = [
        calibrate_entry(m, models_dir, settings, seconds=seconds, batch_size=batch_size) for m in chosen
    ]
    measured = {o.name: o.latency for o in outcomes if o.latency is not None}
    if measured:
        save_registry(_with_latencies(registry, measured), registry_path)
    return outcomes


def _with_latencies(registry: Registry, measured: dict[str, Latency]) -> Registry:
    models = [
        m.model_copy(update={"latency": measured[m.name]}) if m.name in measured else m
        for m in registry.models
    ]
    return registry.model_copy(update={"models": models})


def render(outcomes: list[Outcome]) -> str:
    """A plain-text table of the outcomes."""
    lines = [f"{'model':<24} {'p50 ms':>9} {'p99 ms':>9} {'img/s':>10} {'batch':>5}  host"]
    for o in outcomes:
        if o.latency is None:
            lines.append(f"{o.name:<24} skipped: {o.reason}")
            continue
        lat, h = o.latency, o.latency.host
        where = f"{h.cpu}{' + ' + h.gpu if h.gpu else ''}, {h.provider}, {h.intra_op_threads} thread(s)"
        lines.append(
            f"{o.name:<24} {lat.p50_ms:>9.4f} {lat.p99_ms:>9.4f} {lat.throughput_ips:>10.1f} {lat.batch_size:>5}  {where}"
        )
    return "\n".join(lines)
