"""GET /models in its three formats, sorting and filtering, one model, labels, health."""

from __future__ import annotations

import csv
import io

import pytest

from tests.service.conftest import ClientFactory, Zoo

pytestmark = pytest.mark.anyio

SUMMARY_FIELDS = {
    "name",
    "version",
    "dataset",
    "architecture",
    "num_classes",
    "input_shape",
    "params",
    "depth",
    "gflops",
    "size_mb",
    "top1",
    "top5",
    "accuracy_source",
    "weights",
    "status",
    "status_reason",
    "latency_ms",
    "throughput_ips",
}


async def test_json_lists_every_model_with_status_and_measured_latency(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    registry = zoo.registry
    async with client_for(zoo) as client:
        body = (await client.get("/models")).json()
    assert body["default"] == registry.default
    assert [m["name"] for m in body["models"]] == [m.name for m in registry.models]
    for m in body["models"]:
        assert set(m) >= SUMMARY_FIELDS
        if m["name"] == registry.default:
            assert m["status"] == "loaded" and m["status_reason"] is None
            assert m["latency_ms"] > 0 and m["throughput_ips"] > 0
        else:  # not loaded yet: nothing measured, nothing estimated
            assert m["status"] in ("available", "unavailable")
            assert m["latency_ms"] is None and m["throughput_ips"] is None


async def test_sort_ascending_and_descending_nulls_last(zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo) as client:
        up = (await client.get("/models", params={"sort": "params"})).json()["models"]
        down = (await client.get("/models", params={"sort": "-params"})).json()["models"]
        by_name = (await client.get("/models", params={"sort": "-name"})).json()["models"]
        by_latency = (await client.get("/models", params={"sort": "latency_ms"})).json()["models"]
    assert [m["params"] for m in up] == sorted(m["params"] for m in up)
    assert [m["params"] for m in down] == sorted((m["params"] for m in down), reverse=True)
    assert [m["name"] for m in by_name] == sorted((m["name"] for m in by_name), reverse=True)
    assert by_latency[0]["latency_ms"] is not None and all(m["latency_ms"] is None for m in by_latency[1:])


async def test_dataset_filter(zoo: Zoo, client_for: ClientFactory) -> None:
    dataset = zoo.registry.get(zoo.registry.default).dataset
    async with client_for(zoo) as client:
        same = (await client.get("/models", params={"dataset": dataset})).json()["models"]
        none = (await client.get("/models", params={"dataset": "no-such-dataset"})).json()["models"]
        empty_sorted = await client.get("/models", params={"dataset": "no-such-dataset", "sort": "-top1"})
    assert same and all(m["dataset"] == dataset for m in same)
    assert none == [] and empty_sorted.status_code == 200


async def test_markdown_and_csv_carry_the_comparison_columns(zoo: Zoo, client_for: ClientFactory) -> None:
    registry = zoo.registry
    async with client_for(zoo) as client:
        md = await client.get("/models", params={"format": "markdown", "sort": "-size_mb"})
        text_csv = await client.get("/models", params={"format": "csv", "sort": "-size_mb"})
        js = (await client.get("/models", params={"sort": "-size_mb"})).json()["models"]
    assert md.headers["content-type"].startswith("text/markdown")
    lines = md.text.strip().splitlines()
    assert lines[0].startswith("| name | size (MB) | top-1 | top-5 | parameters | depth | latency")
    assert len(lines) == 2 + len(registry.models)
    assert [line.split("|")[1].strip() for line in lines[2:]] == [m["name"] for m in js]
    assert text_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text_csv.text)))
    assert [r["name"] for r in rows] == [m["name"] for m in js]
    assert {"name", "size_mb", "top1", "top5", "params", "depth", "latency_ms"} <= set(rows[0])
    assert all(int(r["params"]) == m["params"] for r, m in zip(rows, js, strict=True))


async def test_one_model_in_detail(zoo: Zoo, client_for: ClientFactory) -> None:
    registry = zoo.registry
    entry = registry.get(registry.default)
    async with client_for(zoo) as client:
        body = (await client.get(f"/models/{entry.name}")).json()
        labels = (await client.get(f"/models/{entry.name}/labels")).json()
    assert set(body) >= SUMMARY_FIELDS
    assert body["preprocessing"] == entry.preprocessing.model_dump(mode="json")
    assert body["labels_count"] == entry.num_classes
    assert body["artifact"] == {
        "path": entry.artifact.path,
        "bytes": entry.artifact.bytes,
        "sha256": entry.artifact.sha256,
    }
    assert "parity" in body and "provenance" in body
    assert body["calibration"]["p50_ms"] == pytest.approx(body["latency_ms"], rel=1e-3, abs=1e-4)
    assert labels == {"labels": registry.labels_of(entry.name)}


async def test_health(zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo) as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_openapi_and_docs_are_served(zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo) as client:
        spec = (await client.get("/openapi.json")).json()
        assert {"/classify", "/models", "/models/{name}", "/health/ready"} <= set(spec["paths"])
        assert (await client.get("/docs")).status_code == 200
