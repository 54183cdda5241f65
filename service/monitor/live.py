"""The live monitor, in the one process that holds the models: every answered image's `Seen` row (from
this process's requests, or a front's over the link) goes into its model version's sliding window and
Prometheus histograms; the drift statistics are computed when read (GET /models/{name}/monitor, a
scrape), not per request. A reference is captured here from the next answers on an operator's request.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from service.core.errors import ServiceError
from service.core.registry import ModelEntry
from service.monitor import drift, reference
from service.monitor.reference import References
from service.monitor.signals import Seen, Signals

log = logging.getLogger("convzoo.monitor")

CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
ENTROPY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


@dataclass
class Totals:
    """Counts since start-up of one model version's answers, and their histograms (bucket counts, not
    cumulative: the exposition sums them)."""

    answers: int = 0
    scored: int = 0
    unusual: int = 0
    confidence: list[int] = field(default_factory=lambda: [0] * (len(CONFIDENCE_BUCKETS) + 1))
    confidence_sum: float = 0.0
    entropy: list[int] = field(default_factory=lambda: [0] * (len(ENTROPY_BUCKETS) + 1))
    entropy_sum: float = 0.0

    def add(self, row: Seen) -> None:
        self.answers += 1
        self.confidence[bisect.bisect_left(CONFIDENCE_BUCKETS, row.confidence)] += 1
        self.confidence_sum += row.confidence
        self.entropy[bisect.bisect_left(ENTROPY_BUCKETS, row.entropy)] += 1
        self.entropy_sum += row.entropy
        if row.unusual >= 0:
            self.scored += 1
            self.unusual += row.unusual


@dataclass
class Capture:
    samples: int
    rows: list[Seen] = field(default_factory=list)
    error: str | None = None


def _signals(rows: Iterable[Seen]) -> Signals:
    rows = list(rows)

    def column(i: int) -> np.ndarray:
        return np.fromiter((r[i] for r in rows), dtype=np.float64, count=len(rows))

    return Signals(
        classes=column(2).astype(np.int64),
        confidence=column(3),
        entropy=column(4),
        energy=column(5),
        border=column(6),
        brightness=column(7),
    )


def _window(rows: Iterable[Seen]) -> drift.Window:
    s = _signals(rows)
    return drift.Window(s.classes, s.confidence, s.entropy, s.brightness)


class Monitor:
    """Windows, counters and captures per model version; `entry` finds a registry entry by name."""

    def __init__(
        self,
        references: References,
        entry: Callable[[str], ModelEntry],
        labels: Callable[[str], list[str]],
        *,
        window: int,
        min_answers: int,
        registry: CollectorRegistry,
    ) -> None:
        self.references = references
        self.entry = entry
        self.labels = labels
        self.size = window
        self.min_answers = min_answers
        self.windows: dict[tuple[str, str], deque[Seen]] = {}
        self.totals: dict[tuple[str, str], Totals] = {}
        self.captures: dict[tuple[str, str], Capture] = {}
        registry.register(_AnswersCollector(self))
        registry.register(_DriftCollector(self))

    def ingest(self, rows: Iterable[Seen]) -> None:
        """Rows into their windows and counts: plain Python, a few hundred nanoseconds a row (the
        Prometheus client's labelled histograms took 10 us a row, with their locks)."""
        for row in rows:
            key = (row.model, row.version)
            window = self.windows.get(key)
            if window is None:
                window = self.windows[key] = deque(maxlen=self.size)
                self.totals[key] = Totals()
            window.append(row)
            self.totals[key].add(row)
            capture = self.captures.get(key)
            if capture is not None and capture.error is None and len(capture.rows) < capture.samples:
                capture.rows.append(row)
                if len(capture.rows) == capture.samples:
                    self._finish(key, capture)

    def capture(self, entry: ModelEntry, samples: int) -> dict[str, object]:
        """Record the next `samples` answers of this version as its reference (replacing one before)."""
        self.captures[(entry.name, entry.version)] = Capture(samples)
        return self._capture_state(entry)

    def _finish(self, key: tuple[str, str], capture: Capture) -> None:
        name, version = key
        try:
            entry = self.entry(name)
            built = reference.build(
                name,
                version,
                f"captured from traffic ({capture.samples} answers)",
                _signals(capture.rows),
                entry.num_classes,
            )
            self.references.put(entry, built)
        except (OSError, ValueError) as exc:
            capture.error = f"the reference could not be written: {exc}"
            log.warning("capturing the reference of %s %s failed: %s", name, version, exc)
        else:
            self.captures.pop(key, None)
            log.info("captured the reference of %s %s from %d answers", name, version, capture.samples)

    def _capture_state(self, entry: ModelEntry) -> dict[str, object]:
        capture = self.captures.get((entry.name, entry.version))
        if capture is None:
            return {}
        state: dict[str, object] = {"samples": capture.samples, "collected": len(capture.rows)}
        if capture.error is not None:
            state["error"] = capture.error
        return state

    def statistics(self, entry: ModelEntry) -> tuple[list[drift.Statistic], int] | None:
        """The drift statistics of the version's window, and its size; None without a reference or
        without `min_answers` answers in the window."""
        rows = self.windows.get((entry.name, entry.version))
        ref = self.references.get(entry)
        if ref is None or rows is None or len(rows) < self.min_answers:
            return None
        return drift.statistics(ref, _window(rows)), len(rows)

    def report(self, entry: ModelEntry) -> dict[str, object]:
        """GET /models/{name}/monitor's body."""
        key = (entry.name, entry.version)
        rows = list(self.windows.get(key, ()))
        ref = self.references.get(entry)
        totals = self.totals.get(key, Totals())
        answers, unusual = totals.answers, totals.unusual
        found = self.statistics(entry)
        return {
            "model": entry.name,
            "version": entry.version,
            "answers": answers,
            "unusual": unusual,
            "window": _describe(rows, self.size, self.labels(entry.name), ref),
            "reference": ref.summary() if ref is not None else None,
            "drift": _drift(found, self.min_answers),
            "capture": self._capture_state(entry) or None,
        }

    def versions(self) -> list[tuple[str, str]]:
        return list(self.windows)


def _drift(found: tuple[list[drift.Statistic], int] | None, min_answers: int) -> dict[str, object]:
    if found is None:
        return {"judged": False, "min_answers": min_answers, "drifting": False, "statistics": []}
    stats, _ = found
    return {
        "judged": True,
        "min_answers": min_answers,
        "drifting": drift.drifting(stats),
        "statistics": [s.as_json() for s in stats],
    }


def _stats(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return {
        "mean": round(float(values.mean()), 6),
        "p5": round(float(q[0]), 6),
        "p50": round(float(q[1]), 6),
        "p95": round(float(q[2]), 6),
    }


def _describe(
    rows: list[Seen], size: int, labels: list[str], ref: reference.Reference | None
) -> dict[str, object]:
    n = len(rows)
    counts = np.bincount(np.asarray([r.cls for r in rows], dtype=np.int64), minlength=len(labels))
    classes = [
        {
            "index": i,
            "label": labels[i],
            "share": round(float(counts[i]) / n, 6) if n else 0.0,
            "reference_share": round(ref.class_prior[i], 6) if ref is not None else None,
        }
        for i in range(len(labels))
    ]
    width = np.asarray([r.width for r in rows], dtype=np.float64)
    height = np.asarray([r.height for r in rows], dtype=np.float64)
    scored = [r for r in rows if r.unusual >= 0]
    return {
        "size": size,
        "answers": n,
        "unusual_share": round(sum(r.unusual for r in scored) / len(scored), 6) if scored else None,
        "classes": classes,
        "confidence": _stats(np.asarray([r.confidence for r in rows])),
        "entropy": _stats(np.asarray([r.entropy for r in rows])),
        "inputs": {
            "width": _stats(width),
            "height": _stats(height),
            "aspect_ratio": _stats(width / np.maximum(height, 1)),
            "brightness": _stats(np.asarray([r.brightness for r in rows])),
            "grey_share": round(sum(r.grey for r in rows) / n, 6) if n else None,
            "rotated_share": round(sum(r.rotated for r in rows) / n, 6) if n else None,
        },
    }


def _cumulative(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    running, out = 0, []
    for bound, count in zip([*bounds, math.inf], counts, strict=True):
        running += count
        out.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(running)))
    return out


class _AnswersCollector:
    """The answers' histograms and counters per model version, from the monitor's totals at each scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        confidence = HistogramMetricFamily(
            "convzoo_answer_confidence", "Top-1 softmax probability of each answered image.", labels=labels
        )
        entropy = HistogramMetricFamily(
            "convzoo_answer_entropy", "Entropy (nats) of the softmax of each answered image.", labels=labels
        )
        scored = CounterMetricFamily(
            "convzoo_scored_answers",
            "Answers given an out-of-distribution score (the model version has a reference).",
            labels=labels,
        )
        unusual = CounterMetricFamily(
            "convzoo_unusual_answers",
            "Answers flagged unusual (out-of-distribution score above the reference's threshold).",
            labels=labels,
        )
        for key, t in list(self.monitor.totals.items()):
            confidence.add_metric(list(key), _cumulative(t.confidence, CONFIDENCE_BUCKETS), t.confidence_sum)
            entropy.add_metric(list(key), _cumulative(t.entropy, ENTROPY_BUCKETS), t.entropy_sum)
            scored.add_metric(list(key), t.scored)
            unusual.add_metric(list(key), t.unusual)
        yield confidence
        yield entropy
        yield scored
        yield unusual


class _DriftCollector:
    """The drift statistics of every model version's window, as gauges, computed at each scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        value = GaugeMetricFamily(
            "convzoo_drift",
            "A drift statistic of the model version's window against its reference.",
            labels=["model", "version", "statistic"],
        )
        threshold = GaugeMetricFamily(
            "convzoo_drift_threshold",
            "The value of the drift statistic above which the window drifts.",
            labels=["model", "version", "statistic"],
        )
        drifting = GaugeMetricFamily(
            "convzoo_drifting",
            "1 while any drift statistic of the model version's window is past its threshold.",
            labels=["model", "version"],
        )
        answers = GaugeMetricFamily(
            "convzoo_monitor_window_answers",
            "Answers in the model version's sliding window.",
            labels=["model", "version"],
        )
        for name, version in self.monitor.versions():
            rows = self.monitor.windows.get((name, version), ())
            answers.add_metric([name, version], len(rows))
            found = self._statistics(name, version)
            if found is None:
                continue
            for s in found:
                value.add_metric([name, version, s.name], s.value)
                threshold.add_metric([name, version, s.name], s.threshold)
            drifting.add_metric([name, version], 1 if drift.drifting(found) else 0)
        yield value
        yield threshold
        yield drifting
        yield answers

    def _statistics(self, name: str, version: str) -> list[drift.Statistic] | None:
        try:
            entry = self.monitor.entry(name)
        except ServiceError:  # a model gone from the registry: its window is no longer judged
            return None
        if entry.version != version:
            return None
        found = self.monitor.statistics(entry)
        return found[0] if found is not None else None
