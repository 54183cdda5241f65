"""Prometheus view of the model lifecycle: loads, load time, evictions by reason, calibrations, measured
memory per model, and the process's memory against the budget; read from the manager at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.manager import ModelManager
from service.memory import rss_bytes


class LifecycleCollector:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        m = self._manager
        stats = m.stats
        loads = CounterMetricFamily(
            "convzoo_model_loads",
            "Model loads completed, by outcome (ok, failed).",
            labels=["model", "outcome"],
        )
        for (model, outcome), n in sorted(stats.loads.items()):
            loads.add_metric([model, outcome], n)
        seconds = CounterMetricFamily(
            "convzoo_model_load_seconds",
            "Seconds spent in completed loads (checksum, session, warm-up).",
            labels=["model"],
        )
        for model, s in sorted(stats.load_seconds.items()):
            seconds.add_metric([model], s)
        evictions = CounterMetricFamily(
            "convzoo_model_evictions",
            "Models unloaded: reason budget (room for another load), rss (process over budget) or manual.",
            labels=["model", "reason"],
        )
        for (model, reason), n in sorted(stats.evictions.items()):
            evictions.add_metric([model, reason], n)
        calibrations = CounterMetricFamily(
            "convzoo_model_calibrations",
            "Latency calibrations completed, by kind (after-load, background).",
            labels=["model", "kind"],
        )
        for (model, kind), n in sorted(stats.calibrations.items()):
            calibrations.add_metric([model, kind], n)
        measured = GaugeMetricFamily(
            "convzoo_model_memory_measured_bytes",
            "The process's RSS growth over the model's last measured load and warm-up.",
            labels=["model"],
        )
        for state in m.states():
            if state.memory_bytes is not None:
                measured.add_metric([state.entry.name], state.memory_bytes)
        peak = GaugeMetricFamily(
            "convzoo_model_load_peak_bytes",
            "The most the process's RSS grew while the model loaded (median of its recent loads).",
            labels=["model"],
        )
        for state in m.states():
            if state.load_peak_bytes is not None:
                peak.add_metric([state.entry.name], state.load_peak_bytes)
        yield from (loads, seconds, evictions, calibrations, measured, peak)
        yield GaugeMetricFamily(
            "convzoo_memory_budget_bytes", "CONVZOO_MEMORY_BUDGET_MB.", m.settings.memory_budget_bytes
        )
        yield GaugeMetricFamily(
            "convzoo_memory_accounted_bytes",
            "Memory the budget counts now: loaded and loading models, background calibration.",
            m.loaded_bytes(),
        )
        yield GaugeMetricFamily(
            "convzoo_process_resident_bytes", "The process's resident set size.", rss_bytes()
        )
        yield GaugeMetricFamily(
            "convzoo_process_baseline_bytes",
            "The process's RSS at start-up, before any model.",
            m.baseline_rss_bytes,
        )
