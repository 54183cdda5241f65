"""Model states through the HTTP API: checksum and path isolation, random weights, corrupt artifacts,
lazy loading, eviction under a memory budget (more in test_lifecycle.py), an unavailable CUDA provider."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.registry import ModelEntry, Registry
from tests.asgi import manager_of_client
from tests.service.conftest import ClientFactory, FashionSample, Zoo, classify

pytestmark = pytest.mark.anyio


def others(zoo: Zoo, n: int) -> list[ModelEntry]:
    """`n` non-default, built models with real weights whose artifacts are present, smallest first."""
    registry = zoo.registry
    pool = [
        m
        for m in registry.models
        if m.name != registry.default
        and m.weights.kind != "random"
        and m.built
        and zoo.artifact(m.name).is_file()
    ]
    pool.sort(key=lambda m: m.artifact.bytes or 0)
    assert len(pool) >= n, "the zoo needs more models for this test"
    return pool[:n]


def replace_entry(zoo: Zoo, name: str, **changes: Any) -> None:
    registry = zoo.registry
    models = []
    for m in registry.models:
        if m.name == name:
            update = {
                k: (getattr(m, k).model_copy(update=v) if isinstance(v, dict) else v)
                for k, v in changes.items()
            }
            m = ModelEntry.model_validate(
                {
                    **m.model_dump(),
                    **{k: u.model_dump() if hasattr(u, "model_dump") else u for k, u in update.items()},
                }
            )
        models.append(m)
    zoo.save(Registry.model_validate({**registry.model_dump(), "models": [m.model_dump() for m in models]}))


async def status_of(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    body = (await client.get(f"/models/{name}")).json()
    assert isinstance(body, dict)
    return body


async def test_sha256_mismatch_isolates_that_model(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    (bad, good) = others(zoo, 2)
    with zoo.artifact(bad.name).open("ab") as f:
        f.write(b"\0")  # the file no longer matches the registry's sha256
    async with client_for(zoo) as client:
        r = await classify(client, fashion, bad.name)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert "sha256" in r.json()["detail"]
        state = await status_of(client, bad.name)
        assert state["status"] == "unavailable" and "sha256" in state["status_reason"]
        assert (await classify(client, fashion)).status_code == 200
        assert (await classify(client, fashion, good.name)).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200


async def test_a_broken_default_model_fails_readiness_only(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    (good,) = others(zoo, 1)
    zoo.artifact(zoo.registry.default).write_bytes(b"tampered")
    async with client_for(zoo) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and "sha256" in ready.json()["detail"]
        assert (await classify(client, fashion)).status_code == 503
        assert (await classify(client, fashion, good.name)).status_code == 200


async def test_artifact_paths_must_stay_inside_the_model_directory(
    tmp_path: Path, zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    a, b, c = others(zoo, 3)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(zoo.artifact(c.name).read_bytes())
    link = zoo.models_dir / "escape.onnx"
    link.symlink_to(outside)
    replace_entry(zoo, a.name, artifact={"path": "../outside.onnx"})
    replace_entry(zoo, b.name, artifact={"path": str(outside)})
    replace_entry(zoo, c.name, artifact={"path": "escape.onnx"})
    async with client_for(zoo) as client:
        for name in (a.name, b.name, c.name):
            state = await status_of(client, name)
            assert state["status"] == "unavailable", name
            assert "not inside the model directory" in state["status_reason"]
            r = await classify(client, fashion, name)
            assert r.status_code == 503 and str(tmp_path) not in r.text
        assert (await classify(client, fashion)).status_code == 200


async def test_missing_and_corrupt_artifacts(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    missing, corrupt = others(zoo, 2)
    zoo.artifact(missing.name).unlink()
    garbage = b"this is not an ONNX graph" * 10
    zoo.artifact(corrupt.name).write_bytes(garbage)
    replace_entry(
        zoo, corrupt.name, artifact={"bytes": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
    )
    async with client_for(zoo) as client:
        assert "missing" in (await status_of(client, missing.name))["status_reason"]
        r = await classify(client, fashion, corrupt.name)
        assert r.status_code == 503 and "could not load" in r.json()["detail"]
        assert (await status_of(client, corrupt.name))["status"] == "unavailable"
        assert (await classify(client, fashion)).status_code == 200


async def test_random_weights_need_explicit_permission(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    (entry,) = others(zoo, 1)
    no_accuracy = {"top1": None, "top5": None, "accuracy_source": None}
    replace_entry(zoo, entry.name, weights={"kind": "random"}, metrics=no_accuracy)
    async with client_for(zoo) as client:
        state = await status_of(client, entry.name)
        assert state["status"] == "unavailable" and "ALLOW_RANDOM_WEIGHTS" in state["status_reason"]
        assert (await classify(client, fashion, entry.name)).status_code == 503
    async with client_for(zoo, allow_random_weights=True) as client:
        assert (await status_of(client, entry.name))["status"] == "available"
        r = await classify(client, fashion, entry.name)
        assert r.status_code == 200 and r.json()["model"] == entry.name


async def test_lazy_loading_loads_once_under_concurrency(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    (entry,) = others(zoo, 1)
    async with client_for(zoo) as client:
        manager = manager_of_client(client)
        assert (await status_of(client, entry.name))["status"] == "available"
        assert (await status_of(client, entry.name))["latency_ms"] is None
        responses = await asyncio.gather(*(classify(client, fashion, entry.name) for _ in range(8)))
        assert [r.status_code for r in responses] == [200] * 8
        assert manager.state(entry.name).loads == 1
        assert (await status_of(client, entry.name))["status"] == "loaded"
        for _ in range(200):  # calibrated after the load, off the requests' path
            if (await status_of(client, entry.name))["latency_ms"] is not None:
                break
            await asyncio.sleep(0.05)
        assert (await status_of(client, entry.name))["latency_ms"] > 0


async def test_preload_list(zoo: Zoo, client_for: ClientFactory) -> None:
    a, b = others(zoo, 2)
    async with client_for(zoo, preload=[zoo.registry.default, a.name]) as client:
        assert (await status_of(client, a.name))["status"] == "loaded"
        assert (await status_of(client, b.name))["status"] == "available"


async def test_memory_budget_evicts_an_idle_model(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    from tests.service.lifecycle_models import fat_model, install

    registry = zoo.registry
    a, b = others(zoo, 2)
    for entry in (a, b):  # 24 MB each once loaded, measured: room for the default and one of them
        install(zoo, entry.name, fat_model(entry, megabytes=24))
    async with client_for(zoo) as client:  # the default's footprint, whichever model it is
        default_bytes = manager_of_client(client).state(registry.default).memory_estimate_bytes
    budget_mb = (default_bytes + 36_000_000) / 1e6
    async with client_for(zoo, memory_budget_mb=budget_mb) as client:
        manager = manager_of_client(client)
        assert (await classify(client, fashion, a.name)).status_code == 200
        assert (await status_of(client, a.name))["status"] == "loaded"
        assert (await classify(client, fashion, b.name)).status_code == 200
        assert (await status_of(client, b.name))["status"] == "loaded"
        assert (await status_of(client, registry.default))[
            "status"
        ] == "loaded"  # the default is never evicted
        assert (await status_of(client, a.name))["status"] == "available"  # evicted
        assert manager.loaded_bytes() <= budget_mb * 1e6
        assert (await classify(client, fashion, a.name)).status_code == 200  # reloads, evicting b
        assert (await status_of(client, b.name))["status"] == "available"
        assert manager.state(a.name).loads == 2


async def test_a_model_over_the_whole_budget_is_unavailable(zoo: Zoo, client_for: ClientFactory) -> None:
    registry = zoo.registry
    present = [m for m in registry.models if m.weights.kind != "random" and zoo.artifact(m.name).is_file()]
    biggest = max(present, key=lambda m: m.artifact.bytes or 0)
    smaller = registry.get(registry.default).artifact.bytes or 0
    if biggest.name == registry.default or (biggest.artifact.bytes or 0) <= smaller:
        pytest.skip("the default model is the largest one")
    budget_mb = ((biggest.artifact.bytes or 0) - 1) / 1e6
    async with client_for(zoo, memory_budget_mb=budget_mb) as client:
        state = await status_of(client, biggest.name)
        assert state["status"] == "unavailable" and "memory budget" in state["status_reason"]


async def test_explicit_cuda_without_cuda_fails_readiness_with_the_reason(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has CUDA")
    async with client_for(zoo, providers="cuda") as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and "CUDA" in ready.json()["detail"]
        assert (await classify(client, fashion)).status_code == 503
        assert (await status_of(client, zoo.registry.default))["status"] == "unavailable"


async def test_optimised_model_cache(
    tmp_path: Path, zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    cache = tmp_path / "ort-cache"
    scores = []
    for _ in range(2):  # the first start writes the optimised graph, the second loads it
        async with client_for(zoo, optimized_model_cache_dir=cache, graph_optimization="extended") as client:
            r = await classify(client, fashion)
            assert r.status_code == 200
            scores.append(r.json()["results"][0]["predictions"][0]["score"])
        files = sorted(p.name for p in cache.iterdir())
        assert len(files) == 1 and files[0].startswith(zoo.registry.default) and "-extended-cpu" in files[0]
    assert scores[0] == pytest.approx(scores[1], rel=1e-5)


@pytest.mark.parametrize("level", ["disable", "basic"])
async def test_graph_optimisation_levels(
    level: str, zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    async with client_for(zoo, graph_optimization=level, intra_op_threads=1, inter_op_threads=1) as client:
        assert (await classify(client, fashion)).status_code == 200
