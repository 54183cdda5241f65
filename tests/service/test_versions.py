"""Model versions in one process (the app through ASGI, real ONNX Runtime sessions): the registry's
versions and policy, pinning, a canary per client, the shadow's comparison, reloads that swap versions,
keep the current one when a new one fails, let requests in flight finish, and load a version once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from export import versions as export_versions
from service.core.registry import RegistryError, Serving, Share, dump_registry, parse_registry
from service.rollouts import versions
from tests.asgi import manager_of_client
from tests.service.conftest import ClientFactory, FashionSample, Zoo
from tests.service.versioned import OWN_CLASS, V2_CLASS, set_policy, versioned_zoo

pytestmark = pytest.mark.anyio


async def _classify(
    client: httpx.AsyncClient, fashion: FashionSample, model: str, **headers: str
) -> dict[str, Any]:
    r = await client.post(
        "/classify",
        params={"model": model},
        files={"file": ("x.png", fashion.png(0), "image/png")},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _top(body: dict[str, Any]) -> int:
    return int(body["results"][0]["predictions"][0]["index"])


async def _until(check: Any, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# ---- the registry --------------------------------------------------------------------------------------


def test_a_policy_names_versions_the_entry_has(zoo: Zoo, tmp_path: Path) -> None:
    name = versioned_zoo(zoo, tmp_path)
    raw = zoo.registry.model_dump(mode="json")
    entry = next(m for m in raw["models"] if m["name"] == name)
    entry["serving"] = {"stable": "nope"}
    with pytest.raises(RegistryError, match="unknown version 'nope'"):
        parse_registry(raw)
    entry["serving"] = {"stable": "v2", "canary": {"version": "v2", "percent": 5}}
    with pytest.raises(RegistryError, match="canary version is the stable one"):
        parse_registry(raw)


def test_one_version_entries_read_and_write_as_before(committed_registry: Any) -> None:
    text = dump_registry(committed_registry)
    assert "versions:" not in text and "serving:" not in text
    assert all(m.policy == Serving(stable=m.version) for m in committed_registry.models)


def test_the_export_stage_adds_versions_and_keeps_the_older_ones(zoo: Zoo, tmp_path: Path) -> None:
    name = versioned_zoo(zoo, tmp_path)
    entry = zoo.registry.get(name)
    assert entry.version_names == [entry.version, "v2", "broken"]
    v2 = entry.version_entry("v2")
    assert v2.name == f"{name}@v2" and v2.version == "v2" and v2.artifact != entry.artifact
    assert (zoo.models_dir / v2.artifact.path).is_file() and (zoo.models_dir / entry.artifact.path).is_file()
    with pytest.raises(export_versions.VersionError, match="new version needs a new name"):
        export_versions.add_version(
            zoo.registry, zoo.models_dir, name, "v2", zoo.models_dir / v2.artifact.path
        )
    set_policy(zoo, name, stable="v2", canary=(entry.version, 10))
    with pytest.raises(export_versions.VersionError, match="is served"):
        export_versions.retire(zoo.registry, name, "v2")
    with pytest.raises(export_versions.VersionError, match="the entry's own"):
        export_versions.retire(zoo.registry, name, entry.version)
    zoo.save(export_versions.retire(zoo.registry, name, "broken"))
    assert zoo.registry.get(name).version_names == [entry.version, "v2"]


def test_a_canary_percent_is_a_share_of_the_buckets() -> None:
    policy = Serving(stable="a", canary=Share(version="b", percent=10))
    chosen = [versions.choose(policy, b) for b in range(versions.BUCKETS)]
    assert chosen.count("b") == 1000
    assert versions.bucket("client-7") == versions.bucket("client-7")


# ---- requests name versions ------------------------------------------------------------------------------


async def test_a_request_follows_the_policy_or_pins_a_version(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    own = zoo.registry.get(name).version
    async with client_for(zoo) as client:
        followed = await _classify(client, fashion, name)
        assert (followed["model"], followed["version"], _top(followed)) == (name, own, OWN_CLASS)
        pinned = await _classify(client, fashion, f"{name}@v2")
        assert (pinned["model"], pinned["version"], _top(pinned)) == (name, "v2", V2_CLASS)
        pinned_own = await _classify(client, fashion, f"{name}@{own}")
        assert (pinned_own["version"], _top(pinned_own)) == (own, OWN_CLASS)
        r = await client.post(
            "/classify",
            params={"model": f"{name}@nope"},
            files={"file": ("x.png", fashion.png(0), "image/png")},
        )
        assert r.status_code == 404 and "has no version 'nope'" in r.json()["detail"]
        # /v2: the version in the path pins it, and the answer names it
        tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
        meta = (await client.get(f"/v2/models/{name}")).json()
        tensor["name"] = meta["inputs"][0]["name"]
        r = await client.post(f"/v2/models/{name}/versions/v2/infer", json={"inputs": [tensor]})
        assert r.status_code == 200, r.text
        assert r.json()["model_name"] == name and r.json()["model_version"] == "v2"
        assert (await client.get(f"/v2/models/{name}/versions/v2/ready")).status_code == 200
        assert (await client.get(f"/v2/models/{name}/versions/nope/ready")).status_code == 404
        r = await client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert r.json()["model_version"] == own
        rollout = (await client.get(f"/models/{name}/rollout")).json()
        assert rollout["pinned"] == {"v2": 2, own: 1} and rollout["served"] == {own: 2}
        # per-version statistics: each version's own inferences, named as the model
        (v2_stat,) = (await client.get(f"/v2/models/{name}/versions/v2/stats")).json()["model_stats"]
        (own_stat,) = (await client.get(f"/v2/models/{name}/stats")).json()["model_stats"]
        assert (v2_stat["name"], v2_stat["version"], v2_stat["inference_count"]) == (name, "v2", 2)
        assert (own_stat["name"], own_stat["version"], own_stat["inference_count"]) == (name, own, 3)


async def test_a_canary_answers_its_share_of_clients_and_each_client_one_version(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    set_policy(zoo, name, canary=("v2", 50))
    async with client_for(zoo) as client:
        seen: dict[str, set[int]] = {}
        for i in range(40):
            for _ in range(3):
                body = await _classify(client, fashion, name, **{"X-Client-ID": f"user-{i}"})
                seen.setdefault(f"user-{i}", set()).add(_top(body))
        assert all(len(classes) == 1 for classes in seen.values())
        expected = {
            f"user-{i}": V2_CLASS if versions.bucket(f"user-{i}") < 5000 else OWN_CLASS for i in range(40)
        }
        assert {c: next(iter(s)) for c, s in seen.items()} == expected
        assert {OWN_CLASS, V2_CLASS} == set(expected.values())


async def test_a_shadow_gets_copies_and_its_answers_are_compared(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    own = zoo.registry.get(name).version
    set_policy(zoo, name, shadow=("v2", 100))
    async with client_for(zoo) as client:
        for _ in range(20):
            assert _top(await _classify(client, fashion, name)) == OWN_CLASS  # the shadow never answers
        manager = manager_of_client(client)
        await _until(lambda: sum(c.requests for c in manager.rollouts.pairs.values()) >= 20)
        rollout = (await client.get(f"/models/{name}/rollout")).json()
        (pair,) = rollout["shadow"]
        assert (pair["primary"], pair["shadow"], pair["requests"], pair["images"]) == (own, "v2", 20, 20)
        assert pair["agreement"] == 0.0 and pair["agreement_interval"][0] == 0.0
        assert 0.0 < pair["agreement_interval"][1] < 0.2  # Wilson, 0 of 20
        assert pair["confidence_delta_mean"] < 0 and pair["shadow_latency_ms"]["p99"] > 0
        assert rollout["serving"]["shadow"] == {"version": "v2", "percent": 100.0}
        text = (await client.get("/metrics")).text
        assert f'convzoo_shadow_images_total{{model="{name}",primary="{own}",shadow="v2"}} 20.0' in text
        assert f'convzoo_shadow_agreements_total{{model="{name}",primary="{own}",shadow="v2"}} 0.0' in text


# ---- reloads ---------------------------------------------------------------------------------------------


async def test_a_reload_swaps_versions_and_a_broken_one_leaves_the_current_serving(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    own = zoo.registry.get(name).version
    async with client_for(zoo) as client:
        manager = manager_of_client(client)
        set_policy(zoo, name, stable="v2")
        outcome = await manager.reload()
        assert outcome["ok"] and not outcome["errors"]
        body = await _classify(client, fashion, name)
        assert (body["version"], _top(body)) == ("v2", V2_CLASS)
        await _until(lambda: not manager.state(f"{name}@{own}").is_loaded)  # the old one unloaded
        set_policy(zoo, name, stable="broken")
        outcome = await manager.reload()
        assert "broken" in outcome["errors"][name]
        body = await _classify(client, fashion, name)
        assert (body["version"], _top(body)) == ("v2", V2_CLASS)
        row = next(m for m in (await client.get("/models")).json()["models"] if m["name"] == name)
        assert row["version"] == "v2" and row["rollout"]["serving"]["stable"] == "v2"
        assert row["rollout"]["registry"]["stable"] == "broken"
        broken = next(v for v in row["rollout"]["versions"] if v["version"] == "broken")
        assert broken["status"] == "unavailable" and broken["error"]
        ready = (await client.get("/health/ready")).json()
        assert ready["rollout_failed"] and ready["rollout_failed"][0].startswith(f"{name}@broken: ")
        text = (await client.get("/metrics")).text
        assert f'convzoo_model_version_rollout_failed{{model="{name}",version="broken"}} 1.0' in text
        assert f'convzoo_model_version_serving{{model="{name}",role="stable",version="v2"}} 1.0' in text
        # the way back: promote the entry's own version again
        set_policy(zoo, name)
        assert (await manager.reload())["ok"]
        assert _top(await _classify(client, fashion, name)) == OWN_CLASS
        assert not (await client.get("/health/ready")).json()["rollout_failed"]
        # a model removed from the registry: unloaded after its requests, then unknown
        other = next(m.name for m in zoo.registry.models if m.name != name and m.dataset == "fashion-mnist")
        await _classify(client, fashion, other)
        registry = zoo.registry
        zoo.save(registry.model_copy(update={"models": [m for m in registry.models if m.name != other]}))
        assert (await manager.reload())["ok"]
        r = await client.post(
            "/classify", params={"model": other}, files={"file": ("x.png", fashion.png(0), "image/png")}
        )
        assert r.status_code == 404
        await _until(lambda: other not in [s.entry.name for s in manager._states.values()])


async def test_a_version_with_a_wrong_checksum_never_serves(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    async with client_for(zoo) as client:
        manager = manager_of_client(client)
        path = zoo.models_dir / zoo.registry.get(name).version_entry("v2").artifact.path
        path.write_bytes(path.read_bytes() + b"\0")  # changed after it was registered
        set_policy(zoo, name, stable="v2")
        outcome = await manager.reload()
        assert "sha256" in outcome["errors"][name]["v2"]
        assert _top(await _classify(client, fashion, name)) == OWN_CLASS


async def test_requests_in_flight_finish_on_the_version_they_started_on(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path, delay_us=1_500_000)  # a request waits 1.5 s in its model's queue
    own = zoo.registry.get(name).version
    async with client_for(zoo) as client:
        manager = manager_of_client(client)
        set_policy(zoo, name, stable="v2")  # written now, read by the reload below
        started = asyncio.create_task(_classify(client, fashion, name))
        await _until(lambda: manager.state(name).in_flight == 1)
        await manager.reload()  # v2 loads while the request waits in the old version's queue
        assert manager.state(f"{name}@{own}").is_loaded  # not unloaded under its request
        after = await _classify(client, fashion, name)
        before = await started
        assert (before["version"], _top(before)) == (own, OWN_CLASS)
        assert (after["version"], _top(after)) == ("v2", V2_CLASS)
        await _until(lambda: not manager.state(f"{name}@{own}").is_loaded)


async def test_concurrent_reloads_load_a_version_once(
    client_for: ClientFactory, zoo: Zoo, fashion: FashionSample, tmp_path: Path
) -> None:
    name = versioned_zoo(zoo, tmp_path)
    async with client_for(zoo) as client:
        manager = manager_of_client(client)
        set_policy(zoo, name, stable="v2", shadow=("broken", 50))
        outcomes = await asyncio.gather(*(manager.reload() for _ in range(4)))
        assert all(o["ok"] for o in outcomes)
        assert manager.stats.loads[(f"{name}@v2", "ok")] == 1
        assert manager.stats.loads[(f"{name}@broken", "failed")] == 1
        assert manager.serving_policies()[name] == Serving(stable="v2")  # the broken shadow left out
        assert _top(await _classify(client, fashion, name)) == V2_CLASS
