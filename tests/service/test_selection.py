"""Choosing a model by constraints: the pure rules against known figures, then model=auto over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import httpx
import pytest

from service.api.selection import Candidate, Constraints, pareto, select
from service.compute import host
from service.core.errors import InvalidParameter, NoModelFits
from service.core.registry import Latency, ModelEntry, Registry
from service.models.batcher import BatchRecord
from service.models.live_latency import RecentLatencies
from tests.service.conftest import ClientFactory, FashionSample, Zoo


def cand(name: str, top1: float | None, latency: float | None, size: float = 1.0, **kw: Any) -> Candidate:
    values: dict[str, Any] = {
        "name": name,
        "dataset": "d",
        "weights": "trained",
        "status": "available",
        "status_reason": None,
        "top1": top1,
        "accuracy_source": None if top1 is None else "measured",
        "size_mb": size,
        "gflops": size / 10,
        "latency_ms": latency,
        "latency_source": None if latency is None else "registry",
    }
    values.update(kw)
    return Candidate(**values)


# name, top1, latency ms, size MB
ZOO = [
    cand("big", 0.95, 10.0, 100.0),
    cand("mid", 0.90, 2.0, 20.0),
    cand("small", 0.80, 0.5, 2.0),
    cand("tiny", 0.60, 0.1, 0.5),
]


def chosen(constraints: Constraints, pool: list[Candidate] = ZOO) -> str:
    return select(pool, constraints).chosen.name


def failed(selection_or_exc: Any, name: str) -> set[str]:
    rows = selection_or_exc.considered if hasattr(selection_or_exc, "considered") else None
    assert rows is not None
    (verdict,) = [v for v in rows if v.candidate.name == name]
    return {f.constraint for f in verdict.failures}


# ---- each constraint alone, then combined --------------------------------------------------------------


def test_no_constraint_picks_the_most_accurate() -> None:
    assert chosen(Constraints()) == "big"


def test_max_latency_alone() -> None:
    assert chosen(Constraints(max_latency_ms=5)) == "mid"
    assert chosen(Constraints(max_latency_ms=0.5)) == "small"  # the limit itself fits
    s = select(ZOO, Constraints(max_latency_ms=0.2))
    assert s.chosen.name == "tiny"
    assert failed(s, "big") == failed(s, "mid") == failed(s, "small") == {"max_latency_ms"}


def test_min_top1_alone() -> None:
    assert chosen(Constraints(min_top1=0.5)) == "big"
    s = select(ZOO, Constraints(min_top1=0.95))
    assert s.chosen.name == "big" and failed(s, "tiny") == {"min_top1"}


def test_max_size_alone() -> None:
    assert chosen(Constraints(max_size_mb=50)) == "mid"
    assert chosen(Constraints(max_size_mb=1)) == "tiny"


def test_constraints_combined() -> None:
    s = select(ZOO, Constraints(max_latency_ms=5, max_size_mb=10, min_top1=0.7))
    assert s.chosen.name == "small"
    assert failed(s, "big") == {"max_latency_ms", "max_size_mb"}
    assert failed(s, "mid") == {"max_size_mb"}
    assert failed(s, "tiny") == {"min_top1"}
    assert s.considered[0].candidate.name == "small"
    assert s.as_dict()["constraints"] == {"max_latency_ms": 5, "max_size_mb": 10, "min_top1": 0.7}


def test_unmeasured_latency_fails_a_latency_constraint_only() -> None:
    pool = [cand("unmeasured", 0.99, None), *ZOO]
    assert chosen(Constraints(), pool) == "unmeasured"
    s = select(pool, Constraints(max_latency_ms=100))
    assert s.chosen.name == "big" and failed(s, "unmeasured") == {"max_latency_ms"}


# ---- ties, exclusions, no candidate -------------------------------------------------------------------


def test_ties_go_to_lower_latency_then_name() -> None:
    pool = [
        cand("b-slow", 0.9, 3.0),
        cand("c-fast", 0.9, 1.0),
        cand("a-fast", 0.9, 1.0),
        cand("d", 0.9, None),
    ]
    assert chosen(Constraints(), pool) == "a-fast"
    assert [v.candidate.name for v in select(pool, Constraints()).considered] == [
        "a-fast",
        "c-fast",
        "b-slow",
        "d",
    ]
    assert chosen(Constraints(), list(reversed(pool))) == "a-fast"


def test_random_weights_missing_accuracy_and_unavailable_are_never_chosen() -> None:
    pool = [
        cand("random", 0.99, 0.01, weights="random"),
        cand("no-accuracy", None, 0.01),
        cand("broken", 0.99, 0.01, status="unavailable", status_reason="the artifact file is missing"),
        cand("published", 0.70, 1.0, accuracy_source="published"),
    ]
    s = select(pool, Constraints())
    assert s.chosen.name == "published"  # published accuracy counts
    assert failed(s, "random") == {"weights"}
    assert failed(s, "no-accuracy") == {"accuracy"}
    assert failed(s, "broken") == {"status"}


def test_no_candidate_names_the_closest() -> None:
    with pytest.raises(NoModelFits) as info:
        select(ZOO, Constraints(max_latency_ms=1, min_top1=0.85))
    ext = info.value.extensions
    assert ext is not None and ext["constraints"] == {"max_latency_ms": 1, "min_top1": 0.85}
    names = [c["name"] for c in ext["closest"]]
    # one failed constraint each, nearest first (small: 6% short of 0.85; tiny: 29%; mid: 100% over 1 ms);
    # big fails both
    assert names == ["small", "tiny", "mid"]
    assert "small" in info.value.detail and "Closest" in info.value.detail


def test_only_ineligible_models_gives_no_closest() -> None:
    with pytest.raises(NoModelFits) as info:
        select([cand("r", None, 1.0, weights="random")], Constraints())
    assert info.value.extensions is not None and info.value.extensions["closest"] == []


def test_dataset_required_with_several_and_must_exist() -> None:
    pool = [*ZOO, cand("other-best", 0.99, 0.1, dataset="other")]
    with pytest.raises(InvalidParameter, match="several datasets"):
        select(pool, Constraints())
    with pytest.raises(InvalidParameter, match="Unknown dataset"):
        select(pool, Constraints(dataset="nope"))
    assert chosen(Constraints(dataset="d"), pool) == "big"
    assert chosen(Constraints(dataset="other"), pool) == "other-best"


# ---- the frontier ---------------------------------------------------------------------------------------


def test_pareto_orders_by_increasing_cost_and_drops_dominated() -> None:
    pool = [
        *ZOO,
        cand("dominated", 0.85, 5.0, 50.0),  # slower and worse than mid
        cand("same-cost-worse", 0.55, 0.1, 0.5),  # ties tiny's cost, less accurate
        cand("random", None, 0.01, 0.01, weights="random"),
        cand("broken", 0.99, 0.01, 0.01, status="unavailable"),
    ]
    assert [p.candidate.name for p in pareto(pool, "latency")] == ["tiny", "small", "mid", "big"]
    assert [p.cost for p in pareto(pool, "latency")] == [0.1, 0.5, 2.0, 10.0]
    assert [p.candidate.name for p in pareto(pool, "size")] == ["tiny", "small", "mid", "big"]
    flat = [cand("cheap", 0.9, 1.0), cand("dear", 0.9, 2.0), cand("unmeasured", 0.99, None)]
    assert [p.candidate.name for p in pareto(flat, "latency")] == ["cheap"]  # equal accuracy: cheapest only


# ---- recent live latencies --------------------------------------------------------------------------------


def test_recent_latencies_need_enough_samples_in_the_window() -> None:
    recent = RecentLatencies(window_s=60, min_samples=5)
    recent.record(BatchRecord("m", 4, True, 2_000_000, (1_000_000, 1_000_000, 3_000_000, 3_000_000)))
    assert recent.p50_ms("m") is None
    recent.record(BatchRecord("m", 1, False, 9_000_000, (0,)))  # failed batches do not count
    assert recent.p50_ms("m") is None
    recent.record(BatchRecord("m", 1, True, 2_000_000, (2_000_000,)))
    assert recent.p50_ms("m") == (4.0, 5)  # queue + compute: 3, 3, 5, 5, 4 ms
    stale = RecentLatencies(window_s=0.0, min_samples=1)
    stale.record(BatchRecord("m", 1, True, 1, (1,)))
    time.sleep(0.01)
    assert stale.p50_ms("m") is None


# ---- over HTTP: a registry with known figures ----------------------------------------------------------


def known_zoo(zoo: Zoo, figures: list[tuple[float, float, float]], **changes: dict[str, Any]) -> list[str]:
    """Keep the default and the next len(figures)-1 models; give them `figures` (top1, p50, size) in order."""
    registry = zoo.registry
    keep = [registry.get(registry.default)] + [m for m in registry.models if m.name != registry.default]
    keep = keep[: len(figures)]
    here = host.describe(provider="CPUExecutionProvider", intra_op_threads=1)
    models = []
    for entry, (top1, p50, size) in zip(keep, figures, strict=True):
        raw = entry.model_dump()
        raw["metrics"].update(top1=top1, top5=max(top1, raw["metrics"]["top5"] or 0), size_mb=size)
        raw["latency"] = Latency(
            p50_ms=p50,
            p99_ms=p50 * 2,
            throughput_ips=1000.0,
            batch_size=32,
            host=here,
            date=dt.date(2026, 1, 1),
        ).model_dump()
        for key, update in changes.get(entry.name, {}).items():
            raw[key] = {**raw[key], **update} if isinstance(update, dict) else update
        models.append(ModelEntry.model_validate(raw))
    zoo.save(Registry.model_validate({**registry.model_dump(), "models": [m.model_dump() for m in models]}))
    return [m.name for m in models]


async def classify(client: httpx.AsyncClient, fashion: FashionSample, **params: Any) -> httpx.Response:
    return await client.post(
        "/classify", params=params, content=fashion.png(0), headers={"content-type": "image/png"}
    )


# Calibration off: the registry's figures for this host are the measured latency.
FIXED = {"calibration_s": 0, "preload": []}


@pytest.mark.anyio
async def test_auto_chooses_and_explains(zoo: Zoo, client_for: ClientFactory, fashion: FashionSample) -> None:
    a, b, c, d = known_zoo(zoo, [(0.90, 5.0, 1.0), (0.80, 1.0, 1.0), (0.85, 2.0, 9.0), (0.70, 0.5, 0.5)])
    async with client_for(zoo, **FIXED) as client:
        r = await classify(client, fashion, model="auto", max_latency_ms=3, max_size_mb=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == b and body["results"][0]["predictions"]
        sel = body["selection"]
        assert sel["chosen"] == b and sel["dataset"] == "fashion-mnist"
        assert sel["constraints"] == {"max_latency_ms": 3, "max_size_mb": 5}
        rows = {row["name"]: row for row in sel["considered"]}
        assert set(rows) == {a, b, c, d} and sel["considered"][0]["name"] == b
        assert [f["constraint"] for f in rows[a]["failed"]] == ["max_latency_ms"]
        assert [f["constraint"] for f in rows[c]["failed"]] == ["max_size_mb"]
        assert rows[d]["fits"] and rows[b]["latency_source"] == "registry"
        assert "top-1 0.8000" in sel["reason"]
        # no constraint: the most accurate; a named model carries no selection
        assert (await classify(client, fashion, model="auto")).json()["model"] == a
        metrics = (await client.get("/metrics")).text
        # requests are counted under the chosen model
        assert f'convzoo_requests_total{{model="{b}",route="/classify",status="200"}} 1.0' in metrics
        assert "selection" not in (await classify(client, fashion, model=d)).json()


@pytest.mark.anyio
async def test_auto_without_a_fit_is_422_with_the_closest(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    known_zoo(zoo, [(0.90, 5.0, 1.0), (0.80, 1.0, 1.0)])
    async with client_for(zoo, **FIXED) as client:
        r = await classify(client, fashion, model="auto", max_latency_ms=2, min_top1=0.85)
        bad = [
            await classify(client, fashion, model="auto", min_top1=1.5),
            await classify(client, fashion, model="auto", max_latency_ms=0),
            await classify(client, fashion, max_latency_ms=1),  # a constraint without model=auto
            await classify(client, fashion, model="auto", dataset="imagenet-1k"),
        ]
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("no-model-fits") and body["status"] == 422
    assert len(body["closest"]) == 2 and all(c["failed"] for c in body["closest"])
    assert [b.status_code for b in bad] == [422, 422, 422, 422]
    assert "Unknown dataset" in bad[3].json()["detail"]


@pytest.mark.anyio
async def test_auto_needs_a_dataset_when_there_are_several(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    names = known_zoo(zoo, [(0.90, 5.0, 1.0), (0.95, 1.0, 1.0)])
    known_zoo(zoo, [(0.90, 5.0, 1.0), (0.95, 1.0, 1.0)], **{names[1]: {"dataset": "fashion-copy"}})
    async with client_for(zoo, **FIXED) as client:
        r = await classify(client, fashion, model="auto")
        ok = await classify(client, fashion, model="auto", dataset="fashion-copy")
        pareto_r = await client.get("/models/pareto")
    assert r.status_code == 422 and "dataset" in r.json()["detail"]
    assert ok.status_code == 200 and ok.json()["model"] == names[1]
    assert pareto_r.status_code == 422


@pytest.mark.anyio
async def test_random_weights_never_chosen_and_a_broken_choice_falls_back(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    a, b, c = known_zoo(zoo, [(0.70, 1.0, 1.0), (0.90, 1.0, 1.0), (0.80, 0.1, 1.0)])
    known_zoo(
        zoo,
        [(0.70, 1.0, 1.0), (0.90, 1.0, 1.0), (0.80, 0.1, 1.0)],
        **{
            c: {
                "weights": {"kind": "random", "source": "untrained"},
                "metrics": {"top1": None, "top5": None, "accuracy_source": None},
            }
        },
    )
    with zoo.artifact(b).open("ab") as f:
        f.write(b"\0")  # found only when loading: the sha256 no longer matches
    async with client_for(zoo, allow_random_weights=True, **FIXED) as client:
        r = await classify(client, fashion, model="auto")
        again = await classify(client, fashion, model="auto")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == a  # b failed to load, c has random weights
    rows = {row["name"]: row for row in again.json()["selection"]["considered"]}
    assert {f["constraint"] for f in rows[b]["failed"]} == {"status"}
    assert {f["constraint"] for f in rows[c]["failed"]} == {"weights", "accuracy"}


@pytest.mark.anyio
async def test_pareto_over_http(zoo: Zoo, client_for: ClientFactory) -> None:
    a, b, c, d = known_zoo(zoo, [(0.90, 5.0, 1.0), (0.80, 1.0, 2.0), (0.85, 2.0, 9.0), (0.70, 0.5, 0.5)])
    async with client_for(zoo, **FIXED) as client:
        latency = (await client.get("/models/pareto", params={"x": "latency"})).json()
        size = (await client.get("/models/pareto", params={"x": "size", "dataset": "fashion-mnist"})).json()
        gflops = await client.get("/models/pareto", params={"x": "gflops"})
        bad_x = await client.get("/models/pareto", params={"x": "params"})
        bad_ds = await client.get("/models/pareto", params={"dataset": "nope"})
        detail = await client.get(f"/models/{a}")  # /models/{name} still answers
    assert [p["name"] for p in latency["frontier"]] == [d, b, c, a]
    assert [p["cost"] for p in latency["frontier"]] == [0.5, 1.0, 2.0, 5.0]
    assert [p["name"] for p in size["frontier"]] == [d, a] and sorted(size["off_frontier"]) == sorted([b, c])
    costs = [p["cost"] for p in gflops.json()["frontier"]]
    assert gflops.status_code == 200 and costs == sorted(costs)
    assert bad_x.status_code == 422 and bad_ds.status_code == 422
    assert detail.status_code == 200 and detail.json()["name"] == a


@pytest.mark.anyio
async def test_live_latency_replaces_calibration_under_traffic(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    async with client_for(zoo, calibration_s=0.02) as client:
        default = zoo.registry.default
        first = await classify(client, fashion, model="auto", dataset="fashion-mnist")
        await asyncio.gather(*(classify(client, fashion, model=default) for _ in range(30)))
        r = await classify(client, fashion, model="auto", dataset="fashion-mnist")
    before = {row["name"]: row for row in first.json()["selection"]["considered"]}
    rows = {row["name"]: row for row in r.json()["selection"]["considered"]}
    assert before[default]["latency_source"] == "calibration"  # preloaded, calibrated, no traffic yet
    assert rows[default]["latency_source"] == "live" and rows[default]["latency_ms"] > 0
