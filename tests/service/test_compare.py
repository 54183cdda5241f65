"""POST /compare: one image through several models, per-model errors, agreement."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.api.routes.compare import agreement as compare_agreement
from service.images.postprocess import Prediction
from tests.service.conftest import ClientFactory, FashionSample, Zoo

pytestmark = pytest.mark.anyio


def three(zoo: Zoo) -> list[str]:
    """The default and the two smallest other built models of its dataset, with real weights."""
    registry = zoo.registry
    dataset = registry.get(registry.default).dataset
    others = sorted(
        (
            m
            for m in registry.models
            if m.name != registry.default and m.weights.kind != "random" and m.built and m.dataset == dataset
        ),
        key=lambda m: m.artifact.bytes or 0,
    )
    return [registry.default, others[0].name, others[1].name]


async def compare(client: httpx.AsyncClient, body: bytes, **params: Any) -> httpx.Response:
    return await client.post("/compare", params=params, content=body, headers={"content-type": "image/png"})


async def test_one_failing_model_yields_an_error_entry(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    a, bad, c = three(zoo)
    with zoo.artifact(bad).open("ab") as f:
        f.write(b"\0")  # sha256 mismatch, found when loading
    async with client_for(zoo) as client:
        r = await compare(client, fashion.png(0), models=f"{a},{bad},{c}", top_k=3)
        single = await client.post(
            "/classify",
            params={"model": c, "top_k": 3},
            content=fashion.png(0),
            headers={"content-type": "image/png"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["model"] for m in body["models"]] == [a, bad, c]
    ok = {m["model"]: m for m in body["models"] if "predictions" in m}
    err = body["models"][1]["error"]
    assert set(ok) == {a, c}
    assert err["status"] == 503 and "sha256" in err["detail"]
    for m in ok.values():
        assert len(m["predictions"]) == 3
        scores = [p["score"] for p in m["predictions"]]
        assert scores == sorted(scores, reverse=True)
        timing = m["timing_ms"]
        assert timing["inference"] > 0 and timing["load"] >= 0
        assert timing["total"] >= timing["load"] + timing["inference"]
    # the same model answers the same through /classify
    assert ok[c]["predictions"] == single.json()["results"][0]["predictions"]
    agree = body["agreement"]
    assert agree["answered"] == 2 and len(agree["pairwise"]) == 1
    same = ok[a]["predictions"][0]["index"] == ok[c]["predictions"][0]["index"]
    assert agree["pairwise"][0]["same_top1"] is same and agree["unanimous"] is same
    assert agree["share_top1"] == (2 if same else 1)
    assert body["image"] == {"filename": None, "width": 28, "height": 28}


async def test_models_all_runs_every_model_of_the_dataset(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    registry = zoo.registry
    async with client_for(zoo) as client:
        r = await client.post(
            "/compare",
            params={"models": "all", "dataset": "fashion-mnist", "top_k": 1},
            files={"file": ("boot.png", fashion.png(0), "image/png")},
        )
    body = r.json()
    assert r.status_code == 200
    assert [m["model"] for m in body["models"]] == [
        m.name for m in registry.models if m.dataset == "fashion-mnist"
    ]
    answered = [m for m in body["models"] if "predictions" in m]
    assert body["agreement"]["answered"] == len(answered) > 1
    assert len(body["agreement"]["pairwise"]) == len(answered) * (len(answered) - 1) // 2
    assert body["image"]["filename"] == "boot.png"


async def test_bad_requests(zoo: Zoo, client_for: ClientFactory, fashion: FashionSample) -> None:
    a, b, _ = three(zoo)
    two = [("file", ("a.png", fashion.png(0), "image/png")), ("file", ("b.png", fashion.png(1), "image/png"))]
    async with client_for(zoo) as client:
        unknown = await compare(client, fashion.png(0), models=f"{a},no-such-model")
        empty = await compare(client, fashion.png(0), models=" , ")
        top_k = await compare(client, fashion.png(0), models=f"{a},{b}", top_k=11)
        images = await client.post("/compare", params={"models": f"{a},{b}"}, files=two)
        corrupt = await compare(client, b"\x89PNG not really", models=f"{a},{b}")
        dataset = await compare(client, fashion.png(0), models=f"{a},{b}", dataset="fashion-mnist")
        bad_dataset = await compare(client, fashion.png(0), models="all", dataset="nope")
        missing = await client.post("/compare", content=fashion.png(0), headers={"content-type": "image/png"})
    assert unknown.status_code == 404
    assert [r.status_code for r in (empty, top_k, images, dataset, bad_dataset, missing)] == [422] * 6
    assert corrupt.status_code == 400
    for r in (unknown, empty, images, corrupt):
        assert r.headers["content-type"] == "application/problem+json"


def test_agreement_counts_and_pairwise_overlap() -> None:
    def entry(model: str, *indices: int, score: float = 0.1) -> tuple[str, list[Prediction]]:
        return model, [Prediction(index=i, label=f"c{i}", score=score) for i in indices]

    def agreement(answers: list[tuple[str, list[Prediction]]]) -> dict[str, Any]:
        return compare_agreement(answers).model_dump(exclude_unset=True)  # as /compare shows it

    entries = [entry("a", 1, 2, 3), entry("b", 1, 3, 4), entry("c", 2, 1, 3)]  # "d" failed: no answer
    agree = agreement(entries)
    assert agree["answered"] == 3
    assert agree["top1"] == {"index": 1, "label": "c1", "models": ["a", "b"]}
    assert agree["share_top1"] == 2 and not agree["unanimous"] and agree["distinct_top1"] == 2
    pairs = {tuple(p["models"]): p for p in agree["pairwise"]}
    assert pairs[("a", "b")] == {"models": ["a", "b"], "same_top1": True, "topk_overlap": 0.5}
    assert pairs[("a", "c")]["same_top1"] is False and pairs[("a", "c")]["topk_overlap"] == 1.0
    assert agree["pairwise_top1_agreement"] == round(1 / 3, 4)
    tie = agreement([entry("x", 5), entry("y", 2)])
    assert tie["top1"]["index"] == 2  # equal counts and scores: the lower class index
    confident = [entry("x", 5, score=0.9), entry("y", 2)]
    assert agreement(confident)["top1"]["index"] == 5  # equal counts: the higher summed score
    nobody = agreement([])
    assert nobody["answered"] == 0 and nobody["top1"] is None
