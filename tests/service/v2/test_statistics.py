"""The statistics extension's accounting of executed batches."""

from __future__ import annotations

from service.models.batcher import BatchRecord
from service.v2.statistics import Statistics


def test_batches_accumulate_per_model_and_size() -> None:
    stats = Statistics()
    stats.record(BatchRecord(model="m", size=2, ok=True, compute_ns=1000, queue_ns=(10, 20)))
    stats.record(BatchRecord(model="m", size=1, ok=True, compute_ns=400, queue_ns=(5,)))
    stats.record(BatchRecord(model="m", size=2, ok=True, compute_ns=900, queue_ns=(1, 1)))
    stats.record(BatchRecord(model="m", size=3, ok=False, compute_ns=50, queue_ns=(1, 2, 3)))
    stats.record(BatchRecord(model="other", size=1, ok=True, compute_ns=1, queue_ns=(1,)))
    s = stats.model_stat("m", "v1")
    assert (s["name"], s["version"]) == ("m", "v1")
    assert s["inference_count"] == 5 and s["execution_count"] == 3 and s["last_inference"] > 0
    i = s["inference_stats"]
    assert i["success"] == {"count": 5, "ns": 37 + 2 * 1000 + 400 + 2 * 900}
    assert i["fail"] == {"count": 3, "ns": 6 + 3 * 50}
    assert i["queue"] == {"count": 5, "ns": 37}
    assert i["compute_infer"] == {"count": 5, "ns": 2 * 1000 + 400 + 2 * 900}
    assert i["compute_input"] == {"count": 5, "ns": 0} and i["compute_output"] == {"count": 5, "ns": 0}
    assert [(b["batch_size"], b["compute_infer"]) for b in s["batch_stats"]] == [
        (1, {"count": 1, "ns": 400}),
        (2, {"count": 2, "ns": 1900}),
    ]


def test_a_model_without_traffic_reports_zeros() -> None:
    s = Statistics().model_stat("idle", "v")
    assert s["inference_count"] == 0 and s["last_inference"] == 0 and s["batch_stats"] == []
    assert all(d == {"count": 0, "ns": 0} for d in s["inference_stats"].values())
