"""/metrics: Prometheus names, a per-app registry, counters that rise and histograms with buckets."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.models.batcher import BatchRecord
from service.telemetry.metrics import Metrics, ModelGauge
from tests.service.conftest import ClientFactory, FashionSample, Zoo

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _buckets(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    out = {}
    for (sample, sample_labels), value in samples.items():
        if sample == name + "_bucket":
            rest = dict(sample_labels)
            le = rest.pop("le")
            if rest == labels:
                out[le] = value
    return out


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # a process-wide registry would refuse the second set of names
    a.observe_request(route="/classify", model="m", status=200, seconds=0.01)
    a.observe_batch(BatchRecord(model="m", size=3, ok=True, compute_ns=2_000_000, queue_ns=(1, 2, 3)))
    assert (
        _value(
            _samples(a.exposition().decode()),
            "convzoo_requests_total",
            route="/classify",
            model="m",
            status="200",
        )
        == 1
    )
    assert (
        _value(
            _samples(b.exposition().decode()),
            "convzoo_requests_total",
            route="/classify",
            model="m",
            status="200",
        )
        == 0
    )
    batch = _buckets(_samples(a.exposition().decode()), "convzoo_batch_size", model="m")
    assert batch["2.0"] == 0 and batch["4.0"] == 1 and batch["+Inf"] == 1


def test_models_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    rows = [ModelGauge("a", True, 1000), ModelGauge("b", False, 5000)]
    metrics.watch_models(lambda: rows)
    samples = _samples(metrics.exposition().decode())
    assert _value(samples, "convzoo_models_loaded") == 1
    assert _value(samples, "convzoo_model_memory_bytes", model="a") == 1000
    assert ("convzoo_model_memory_bytes", frozenset({("model", "b")})) not in samples
    rows.append(ModelGauge("c", True, 7))
    assert _value(_samples(metrics.exposition().decode()), "convzoo_models_loaded") == 2


async def test_counters_rise_and_histograms_have_buckets(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample
) -> None:
    default = zoo.registry.default
    async with client_for(zoo) as client:
        first = await client.get("/metrics")
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/plain")
        before = _samples(first.text)
        response = await client.post(
            "/classify", content=fashion.png(0), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 200
        after = _samples((await client.get("/metrics")).text)
    labels = {"route": "/classify", "model": default, "status": "200"}
    assert (
        _value(after, "convzoo_requests_total", **labels)
        == _value(before, "convzoo_requests_total", **labels) + 1
    )
    duration = _buckets(after, "convzoo_request_duration_seconds", **labels)
    assert len(duration) > 5 and duration["+Inf"] >= 1
    assert list(duration.values()) == sorted(duration.values())  # cumulative
    for name in (
        "convzoo_queue_duration_seconds",
        "convzoo_inference_duration_seconds",
        "convzoo_batch_size",
    ):
        buckets = _buckets(after, name, model=default)
        assert len(buckets) > 5 and buckets["+Inf"] >= 1, name
    assert _value(after, "convzoo_models_loaded") >= 1
    assert _value(after, "convzoo_model_memory_bytes", model=default) > 0


async def test_overload_counts_as_rejected(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample
) -> None:
    default = zoo.registry.default
    async with client_for(zoo, max_queue_size=1) as client:
        files = [("file", (f"{i}.png", fashion.png(i), "image/png")) for i in range(2)]
        response = await client.post("/classify", files=files)
        assert response.status_code == 503
        samples = _samples((await client.get("/metrics")).text)
    assert _value(samples, "convzoo_rejected_requests_total", route="/classify", model=default) == 1
    assert _value(samples, "convzoo_requests_total", route="/classify", model=default, status="503") == 1


async def test_model_label_comes_from_the_registry_only(client_for: ClientFactory, zoo: Zoo) -> None:
    async with client_for(zoo) as client:
        await client.get("/v2/models/made-up-name")
        await client.get("/models/another-made-up-name")
        text = (await client.get("/metrics")).text
    assert "made-up-name" not in text
    assert (
        _value(_samples(text), "convzoo_requests_total", route="/v2/models/{name}", model="", status="404")
        == 1
    )
