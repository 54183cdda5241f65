"""Prometheus metrics, in one registry per app (never the process-wide default registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.models.batcher import BatchRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: from sub-millisecond (small models, warm) to the request timeout's order of magnitude.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelGauge:
    """What the models gauges read at scrape time: one row per model."""

    name: str
    loaded: bool
    memory_bytes: int
    unavailable: bool = False  # cannot be served (deploy/prometheus/rules.yml alerts when it is requested)


class _ModelsCollector:
    """Models loaded and their memory, read from the service at each scrape."""

    def __init__(self, read: Callable[[], Iterable[ModelGauge]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        rows = list(self._read())
        loaded = GaugeMetricFamily("convzoo_models_loaded", "Models loaded in ONNX Runtime now.")
        loaded.add_metric([], sum(1 for r in rows if r.loaded))
        memory = GaugeMetricFamily(
            "convzoo_model_memory_bytes",
            "Bytes a loaded model counts against the memory budget (measured on load; estimated before).",
            labels=["model"],
        )
        for r in rows:
            if r.loaded:
                memory.add_metric([r.name], r.memory_bytes)
        unavailable = GaugeMetricFamily(
            "convzoo_model_unavailable",
            "1 for a registry model that cannot be served (artifact missing or corrupt, over budget, no provider).",
            labels=["model"],
        )
        for r in rows:
            unavailable.add_metric([r.name], 1 if r.unavailable else 0)
        yield loaded
        yield memory
        yield unavailable


class Metrics:
    """The service's metrics; `observe_request` and `observe_batch` are the only writers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "convzoo_requests", "HTTP requests answered.", ["route", "model", "status"], registry=r
        )
        self.request_duration = Histogram(
            "convzoo_request_duration_seconds",
            "Time from receiving a request to the end of its response.",
            ["route", "model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "convzoo_rejected_requests",
            "Requests answered 503 (overloaded, not ready, model unavailable, deadline passed).",
            ["route", "model"],
            registry=r,
        )
        self.queue_duration = Histogram(
            "convzoo_queue_duration_seconds",
            "Time an image waited in its model's batching queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "convzoo_inference_duration_seconds",
            "Time to run one batch through ONNX Runtime.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "convzoo_batch_size", "Images per executed batch.", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batches = Counter(
            "convzoo_batches", "Batches executed, by outcome.", ["model", "outcome"], registry=r
        )
        # The key ids come from the operator's keys file, so the series are bounded by it; "" without a key.
        self.client_requests = Counter(
            "convzoo_client_requests",
            "Requests answered, by API key id (docs/auth.md) and status.",
            ["client", "status"],
            registry=r,
        )
        self._models: _ModelsCollector | None = None

    def observe_request(
        self, *, route: str, model: str, status: int, seconds: float, client: str = ""
    ) -> None:
        labels = (route, model, str(status))
        self.requests.labels(*labels).inc()
        self.request_duration.labels(*labels).observe(seconds)
        if status == 503:
            self.rejected.labels(route, model).inc()
        if client:
            self.client_requests.labels(client, str(status)).inc()

    def observe_batch(self, record: BatchRecord) -> None:
        """A batcher hook: called from inference threads after every batch."""
        model = record.model
        self.batch_size.labels(model).observe(record.size)
        self.inference_duration.labels(model).observe(record.compute_ns / 1e9)
        self.batches.labels(model, "ok" if record.ok else "failed").inc()
        queue = self.queue_duration.labels(model)
        for ns in record.queue_ns:
            queue.observe(ns / 1e9)

    def watch_models(self, read: Callable[[], Iterable[ModelGauge]]) -> None:
        """Report the models gauges from `read`, called at each scrape (replaces an earlier source)."""
        if self._models is not None:
            self.registry.unregister(self._models)
        self._models = _ModelsCollector(read)
        self.registry.register(self._models)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
