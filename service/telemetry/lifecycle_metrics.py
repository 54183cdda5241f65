"""Prometheus view of the model lifecycle: loads, load time, evictions by reason, calibrations, measured
memory per model, and the process's memory against the budget; read from the manager at each scrape."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.compute.memory import rss_bytes
from service.models.manager import ModelManager

Labels = TypeVar("Labels", bound=tuple[str, ...])  # one label value per label name


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    labels: list[str],
    values: Mapping[Labels, float],
) -> Metric:
    family = kind(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class LifecycleCollector:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        m = self._manager
        stats = m.stats
        states = m.states()
        yield _family(
            CounterMetricFamily,
            "convzoo_model_loads",
            "Model loads completed, by outcome (ok, failed).",
            ["model", "outcome"],
            stats.loads,
        )
        yield _family(
            CounterMetricFamily,
            "convzoo_model_load_seconds",
            "Seconds spent in completed loads (checksum, session, warm-up).",
            ["model"],
            {(model,): s for model, s in stats.load_seconds.items()},
        )
        yield _family(
            CounterMetricFamily,
            "convzoo_model_evictions",
            "Models unloaded: reason budget (room for another load), rss (process over budget), batches (room for a running batch's activations), manual, or retired (a version no policy serves).",
            ["model", "reason"],
            stats.evictions,
        )
        yield _family(
            CounterMetricFamily,
            "convzoo_model_calibrations",
            "Latency calibrations completed, by kind (after-load, background).",
            ["model", "kind"],
            stats.calibrations,
        )
        yield _family(
            GaugeMetricFamily,
            "convzoo_model_memory_measured_bytes",
            "The process's RSS growth over the model's last measured load and warm-up.",
            ["model"],
            {(st.entry.name,): st.memory_bytes for st in states if st.memory_bytes is not None},
        )
        yield _family(
            GaugeMetricFamily,
            "convzoo_model_load_peak_bytes",
            "The most the process's RSS grew while the model loaded (median of its recent loads).",
            ["model"],
            {(st.entry.name,): st.load_peak_bytes for st in states if st.load_peak_bytes is not None},
        )
        yield GaugeMetricFamily(
            "convzoo_memory_budget_bytes", "CONVZOO_MEMORY_BUDGET_MB.", m.settings.memory_budget_bytes
        )
        yield GaugeMetricFamily(
            "convzoo_memory_accounted_bytes",
            "Memory the budget counts now: loaded and loading models, background calibration.",
            m.loaded_bytes(),
        )
        yield GaugeMetricFamily(
            "convzoo_batch_memory_reserved_bytes",
            "Activations of the batches running now, counted against the memory budget.",
            m.batch_memory.reserved_bytes,
        )
        yield _family(
            CounterMetricFamily,
            "convzoo_batch_memory_events",
            "Batches the memory budget held back: cut (fewer images ran), wait (waited for room), alone (one "
            "image over the budget, run with no other batch running).",
            ["model", "event"],
            dict(m.batch_memory.events),
        )
        yield _family(
            GaugeMetricFamily,
            "convzoo_model_activation_per_image_bytes",
            "A batch's activation memory per image: measured at calibration, else estimated from the input.",
            ["model", "source"],
            {(st.entry.name, st.activation_source): st.activation_per_image_bytes for st in states},
        )
        yield GaugeMetricFamily(
            "convzoo_process_resident_bytes", "The process's resident set size.", rss_bytes()
        )
        yield GaugeMetricFamily(
            "convzoo_process_baseline_bytes",
            "The process's RSS at start-up, before any model.",
            m.baseline_rss_bytes,
        )
