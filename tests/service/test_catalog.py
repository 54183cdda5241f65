"""What the catalog tells people: a model that is not built answers 409 with the command that builds it
(problem details, /v2, readiness), a mistyped name gets the closest known one, start-up sums the catalog up
in one line, and a request that chose no model is counted under no model."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.core.catalog import build_command, closest, summary
from service.core.registry import ModelEntry
from service.models.manager import ModelState
from tests.service.conftest import ClientFactory, FashionSample, Zoo, classify
from tests.service.test_manager import others

pytestmark = pytest.mark.anyio

NOT_BUILT = "urn:convzoo:problem:model-not-built"


def _unbuilt_imagenet(zoo: Zoo) -> ModelEntry:
    return next(m for m in zoo.registry.models if m.dataset == "imagenet-1k" and not m.built)


def test_each_family_names_its_own_build_command(zoo: Zoo) -> None:
    registry = zoo.registry
    imagenet = _unbuilt_imagenet(zoo)
    fmnist = next(m for m in registry.models if m.dataset == "fashion-mnist" and m.quantization is None)
    int8 = next(m for m in registry.models if m.quantization is not None)
    assert build_command(imagenet) == (
        f".venv/bin/python -m export build --zoo imagenet --models {imagenet.name}"
    )
    assert build_command(fmnist) == "make models"
    assert int8.quantization is not None
    assert (
        build_command(int8)
        == f".venv/bin/python -m export quantize --model {int8.quantization.quantized_from}"
    )
    imagenet_int8 = int8.model_copy(update={"dataset": "imagenet-1k"})
    assert build_command(imagenet_int8).endswith("--calibration-images DIR --agreement-images DIR")


def test_the_closest_name_ignores_case_and_hyphens_and_allows_typos() -> None:
    known = ["efficientnet_lite0", "fmnist-lenet5", "resnet50", "resnet18"]
    assert closest("efficientnet-lite0", known) == "efficientnet_lite0"
    assert closest("FMNIST_LENET5", known) == "fmnist-lenet5"
    assert closest("resnet5O", known) == "resnet50"
    assert closest("lenet5", known) == "fmnist-lenet5"
    assert closest("transformer", known) is None
    assert closest("anything", []) is None


async def test_a_model_not_built_is_409_with_the_command_and_no_retry_after(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    unbuilt = _unbuilt_imagenet(zoo)
    command = build_command(unbuilt)
    async with client_for(zoo) as client:
        r = await classify(client, fashion, unbuilt.name)
        row = (await client.get(f"/models/{unbuilt.name}")).json()
        listed = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
    assert r.status_code == 409, r.text
    assert "retry-after" not in r.headers
    body = r.json()
    assert body["type"] == NOT_BUILT and body["status"] == 409 and body["title"] == "Model not built"
    assert body["build_command"] == command and body["model"] == unbuilt.name
    assert f"`{command}` builds it" in body["detail"]
    # GET /models keeps the state, and says how to leave it.
    assert row["status"] == "unavailable" and command in row["status_reason"]
    assert listed[unbuilt.name]["status"] == "unavailable"


async def test_a_missing_artifact_file_is_not_built_either(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    (missing,) = others(zoo, 1)
    zoo.artifact(missing.name).unlink()
    async with client_for(zoo) as client:
        r = await classify(client, fashion, missing.name)
        assert (await classify(client, fashion)).status_code == 200  # the others serve on
    assert r.status_code == 409 and "retry-after" not in r.headers
    assert r.json()["build_command"] == build_command(missing) and "missing" in r.json()["detail"]


async def test_v2_answers_a_model_not_built_with_409_in_its_own_body(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    unbuilt = _unbuilt_imagenet(zoo)
    tensor = {"name": unbuilt.input.name, "shape": [1, 3, 224, 224], "datatype": "FP32"}
    body = {"inputs": [{**tensor, "data": [0.0] * (3 * 224 * 224)}]}
    async with client_for(zoo) as client:
        infer = await client.post(f"/v2/models/{unbuilt.name}/infer", json=body)
        ready = await client.get(f"/v2/models/{unbuilt.name}/ready")
    for response in (infer, ready):
        assert response.status_code == 409, response.text
        assert set(response.json()) == {"error"} and "retry-after" not in response.headers
        assert build_command(unbuilt) in response.json()["error"]


async def test_readiness_names_the_command_when_the_default_is_not_built(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    unbuilt = _unbuilt_imagenet(zoo)
    zoo.save(zoo.registry.model_copy(update={"default": unbuilt.name}))
    async with client_for(zoo) as client:
        ready = await client.get("/health/ready")
        v2 = await client.get("/v2/health/ready")
    assert ready.status_code == 503 and build_command(unbuilt) in ready.json()["detail"]
    assert ready.json()["unavailable"] == [unbuilt.name]
    assert v2.status_code == 503 and build_command(unbuilt) in v2.json()["error"]


async def test_an_unknown_name_gets_the_closest_known_one(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    unbuilt = _unbuilt_imagenet(zoo)
    hyphenated = unbuilt.name.replace("_", "-").upper()
    default = zoo.registry.default
    async with client_for(zoo) as client:
        detail = await client.get(f"/models/{hyphenated}")
        posted = await classify(client, fashion, default.upper())
        v2 = await client.get(f"/v2/models/{hyphenated}")
        far = await client.get("/models/zzzzzzzz")
    assert detail.status_code == 404 and detail.json()["did_you_mean"] == unbuilt.name
    assert f"did you mean '{unbuilt.name}'?" in detail.json()["detail"]
    assert posted.status_code == 404 and posted.json()["did_you_mean"] == default
    assert v2.status_code == 404 and f"did you mean '{unbuilt.name}'?" in v2.json()["error"]
    assert far.status_code == 404 and "did_you_mean" not in far.json()
    assert "did you mean" not in far.json()["detail"]


async def test_start_up_sums_the_catalog_up_in_one_line(
    zoo: Zoo, client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    registry = zoo.registry
    unbuilt = [m for m in registry.models if not m.built]
    assert unbuilt, "the zoo has ImageNet models catalogued only"
    caplog.set_level(logging.DEBUG, logger="convzoo")
    async with client_for(zoo):
        pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("catalog:")]
    assert lines == [
        f"catalog: {len(registry.models)} models, {len(registry.models) - len(unbuilt)} servable, "
        f"{len(unbuilt)} not built (.venv/bin/python -m export build --zoo imagenet --models NAME); "
        f"default {registry.default}"
    ]
    not_built = [r for r in caplog.records if "not built" in r.getMessage()]
    warned = [r for r in not_built if r.levelno >= logging.WARNING]
    assert not warned  # one DEBUG line per model, no warning each
    assert sum(r.levelno == logging.DEBUG for r in not_built) == len(unbuilt)


def test_the_summary_counts_other_unavailable_models_apart(zoo: Zoo) -> None:
    from service.core.settings import Settings
    from service.models.manager import BatchingPolicy

    registry = zoo.registry
    policy = BatchingPolicy.of(registry.models[0], Settings())
    fmnist, int8, imagenet = (
        next(m for m in registry.models if m.quantization is None and m.built),
        next(m for m in registry.models if m.quantization is not None),
        _unbuilt_imagenet(zoo),
    )
    states = [
        ModelState(fmnist, policy),
        ModelState(fmnist, policy, status="unavailable", reason="random weights"),
        ModelState(int8, policy, status="unavailable", build_command=build_command(int8)),
        ModelState(imagenet, policy, status="unavailable", build_command=build_command(imagenet)),
    ]
    assert summary(states, fmnist.name) == (
        "catalog: 4 models, 1 servable, 2 not built (.venv/bin/python -m export quantize --model NAME; "
        ".venv/bin/python -m export build --zoo imagenet --models NAME), "
        f"1 unavailable for other reasons (GET /models says why); default {fmnist.name}"
    )


def _requests(text: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "convzoo_requests_total" and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_request_that_chose_no_model_is_counted_under_no_model(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    default = zoo.registry.default
    png = {"file": ("x.png", fashion.png(0), "image/png")}
    async with client_for(zoo) as client:
        unchosen = await client.post("/classify", params={"top_k": 0}, files=png)
        chosen = await client.post("/classify", params={"top_k": 0, "model": default}, files=png)
        served = await client.post("/classify", files=png)  # the default, chosen by the handler
        text = (await client.get("/metrics")).text
    assert unchosen.status_code == chosen.status_code == 422 and served.status_code == 200
    assert _requests(text, route="/classify", model="", status="422") == 1
    assert _requests(text, route="/classify", model=default, status="422") == 1
    assert _requests(text, route="/classify", model=default, status="200") == 1
