"""The model lifecycle: readiness with a preload list, calibration off the request path and in the
background, deadlines while waiting for a load, parallel loads, measured memory, size- and
frequency-aware eviction, and their metrics. Real ONNX graphs, real ONNX Runtime, the real app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.core.registry import ModelEntry
from service.models.manager import ModelManager
from tests.asgi import manager_of_client
from tests.service.conftest import ClientFactory, FashionSample, Zoo, classify
from tests.service.lifecycle_models import fat_model, install, slow_loading_model

pytestmark = pytest.mark.anyio

SLOW_MATMULS = 24  # about 0.6-1.5 s of load on a 2-core machine: longer than a 0.5 s deadline
QUICK_MATMULS = 8  # a load that is slow enough to be seen loading


def fashion_models(zoo: Zoo) -> list[ModelEntry]:
    """The built, non-default models with real weights, smallest first."""
    registry = zoo.registry
    pool = [
        m
        for m in registry.models
        if m.name != registry.default
        and m.built
        and m.weights.kind != "random"
        and zoo.artifact(m.name).is_file()
    ]
    return sorted(pool, key=lambda m: m.artifact.bytes or 0)


def manager_of(client: httpx.AsyncClient) -> ModelManager:
    return manager_of_client(client)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll `check` until true; the seconds it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def summary(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    body = (await client.get(f"/models/{name}")).json()
    assert isinstance(body, dict)
    return body


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ---- readiness ------------------------------------------------------------------------------------------


async def test_readiness_with_a_preload_list_without_the_default(zoo: Zoo, client_for: ClientFactory) -> None:
    slow, other = fashion_models(zoo)[:2]
    install(zoo, slow.name, slow_loading_model(slow, matmuls=QUICK_MATMULS))
    default = zoo.registry.default
    async with client_for(zoo, wait_ready=False, preload=[slow.name, other.name]) as client:
        first = await client.get("/health/ready")
        assert first.status_code == 503 and "retry-after" in first.headers
        body = first.json()
        assert (
            slow.name in body["loading"] and "still loading" in body["detail"] and slow.name in body["detail"]
        )

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await until(ready, 30, "ready")
        ok = (await client.get("/health/ready")).json()
        assert set(ok["loaded"]) == {default, slow.name, other.name} and ok["loading"] == []
        for name in (default, slow.name, other.name):  # the default is loaded though not in the list
            assert (await summary(client, name))["status"] == "loaded"


async def test_readiness_names_a_preloaded_model_that_cannot_load(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    (broken,) = fashion_models(zoo)[:1]
    with zoo.artifact(broken.name).open("ab") as f:
        f.write(b"\0")
    async with client_for(zoo, preload=[broken.name]) as client:
        r = await client.get("/health/ready")
        assert r.status_code == 503 and r.json()["unavailable"] == [broken.name]
        assert "sha256" in r.json()["detail"] and broken.name in r.json()["detail"]


# ---- calibration ----------------------------------------------------------------------------------------


async def test_the_first_request_to_a_cold_model_is_not_delayed_by_calibration(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    cold = fashion_models(zoo)[0].name
    async with client_for(zoo, calibration_s=1.5) as client:
        manager = manager_of(client)
        started = time.monotonic()
        r = await classify(client, fashion, cold)
        answered = time.monotonic() - started
        assert r.status_code == 200
        # Calibration takes 1.5 s and starts after the load: the answer did not wait for it.
        assert manager.state(cold).calibration is None and answered < 1.5
        assert (await summary(client, cold))["latency_ms"] is None

        async def calibrated() -> bool:
            return (await summary(client, cold))["latency_ms"] is not None

        await until(calibrated, 30, "calibrated after the load")
        assert (await summary(client, cold))["latency_source"] == "calibration"


async def test_background_calibration_measures_every_model_after_start_up(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    slow = fashion_models(zoo)[0]
    install(zoo, slow.name, slow_loading_model(slow, matmuls=SLOW_MATMULS))
    async with client_for(zoo, wait_ready=False, background_calibration=True, calibration_s=0.05) as client:
        manager = manager_of(client)
        start = time.monotonic()

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await until(ready, 30, "ready")
        # Readiness did not wait for the calibration of the others (the slow one alone takes longer).
        assert manager.state(slow.name).calibration is None
        models = (await client.get("/models")).json()["models"]
        servable = [m["name"] for m in models if m["status"] != "unavailable"]
        assert len(servable) >= 5

        async def all_measured() -> bool:
            listed = (await client.get("/models")).json()["models"]
            return all(m["latency_ms"] is not None for m in listed if m["name"] in servable)

        await until(all_measured, 60, "every available model calibrated")
        took = time.monotonic() - start
        listed = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        for name in servable:
            m = listed[name]
            assert m["throughput_ips"] > 0 and m["latency_source"] == "calibration"
            assert m["memory_bytes"] is not None and m["memory_source"] == "measured"
            if name != zoo.registry.default:  # loaded privately for calibration, and released again
                assert m["status"] == "available" and m["loads"] == 0
        pareto = (await client.get("/models/pareto", params={"dataset": "fashion-mnist"})).json()
        on = {p["name"] for p in pareto["frontier"]} | set(pareto["off_frontier"])
        assert on >= set(servable)
        assert all(p["latency_source"] == "calibration" for p in pareto["frontier"])
        metrics = samples((await client.get("/metrics")).text)
        assert (
            metrics[
                (
                    "convzoo_model_calibrations_total",
                    frozenset({("model", slow.name), ("kind", "background")}),
                )
            ]
            == 1
        )
        print(f"every available model calibrated {took:.1f} s after start-up")


async def test_registry_latency_is_labelled_with_its_host(zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo) as client:
        models = (await client.get("/models")).json()["models"]
    with_figure = [m for m in models if m["registry_latency_ms"] is not None]
    assert with_figure, "the committed zoo records latencies measured at export"
    for m in with_figure:
        assert m["registry_latency_host"] and "Provider" in m["registry_latency_host"]
        if m["latency_ms"] is None:
            assert m["latency_source"] is None  # this host has not measured it: null, never the registry's


# ---- loads and deadlines ------------------------------------------------------------------------------------


async def test_deadline_while_waiting_for_a_load(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    slow, cold = fashion_models(zoo)[:2]
    install(zoo, slow.name, slow_loading_model(slow, matmuls=SLOW_MATMULS))
    async with client_for(zoo, request_timeout_s=0.5, load_threads=2) as client:
        manager = manager_of(client)
        t0 = time.monotonic()
        waited, hot, other = await asyncio.gather(
            classify(client, fashion, slow.name),
            classify(client, fashion),
            classify(client, fashion, cold.name),
        )
        # The first request to the slow model never saw it load: answered when its deadline passed.
        assert waited.status_code == 503 and waited.json()["type"].endswith("deadline-exceeded")
        assert "retry-after" in waited.headers and time.monotonic() - t0 < 5
        # Others are not delayed by that load: the default is served, another cold model loads beside it.
        assert hot.status_code == 200 and other.status_code == 200

        async def loaded() -> bool:
            return manager.state(slow.name).is_loaded

        await until(loaded, 30, "the load nobody waited for finished")
        load_s = manager.state(slow.name).load_s
        assert load_s is not None and load_s > 0.5
        assert (await classify(client, fashion, slow.name)).status_code == 200
        # Known to take longer than the deadline: 503 at once, Retry-After from the expected load time.

        async def unloaded() -> bool:  # once its batcher's thread has finished with the last batch
            return manager.unload(slow.name)

        await until(unloaded, 5, "unloaded")
        t1 = time.monotonic()
        fast = await classify(client, fashion, slow.name)
        assert fast.status_code == 503 and time.monotonic() - t1 < 0.4
        assert int(fast.headers["retry-after"]) >= 1 and "needs about" in fast.json()["detail"]
        await until(loaded, 30, "the load started by the refused request finished")
        assert (await classify(client, fashion, slow.name)).status_code == 200
        assert manager.state(slow.name).loads == 2


async def test_loads_of_different_models_run_in_parallel(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    a, b = fashion_models(zoo)[:2]
    for entry in (a, b):
        install(zoo, entry.name, slow_loading_model(entry, matmuls=QUICK_MATMULS))
    async with client_for(zoo, load_threads=2, request_timeout_s=60) as client:
        manager = manager_of(client)
        ra, rb = await asyncio.gather(classify(client, fashion, a.name), classify(client, fashion, b.name))
        assert ra.status_code == 200 and rb.status_code == 200
        spans = []
        for name in (a.name, b.name):
            state = manager.state(name)
            assert state.loaded_at is not None and state.load_s is not None
            end = state.loaded_at.timestamp()
            spans.append((end - state.load_s, end))
        (s1, e1), (s2, e2) = spans
        assert s1 < e2 and s2 < e1, f"the two loads did not overlap: {spans}"


# ---- memory and eviction -------------------------------------------------------------------------------------


async def test_measured_memory_of_a_model_larger_loaded_than_its_file(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    (fat,) = fashion_models(zoo)[:1]
    data = fat_model(fat, megabytes=24)
    install(zoo, fat.name, data)
    async with client_for(zoo) as client:
        before = await summary(client, fat.name)
        assert before["memory_bytes"] is None and before["memory_source"] == "estimated"
        assert (await classify(client, fashion, fat.name)).status_code == 200
        after = await summary(client, fat.name)
        metrics = samples((await client.get("/metrics")).text)
    assert len(data) < 2000 and after["memory_bytes"] > 18_000_000 and after["memory_source"] == "measured"
    assert after["last_load_s"] > 0 and after["last_loaded_at"] and after["loads"] == 1
    model = frozenset({("model", fat.name)})
    assert metrics[("convzoo_model_memory_measured_bytes", model)] == after["memory_bytes"]
    assert after["load_peak_bytes"] >= after["memory_bytes"]  # the session build holds more than the result
    assert metrics[("convzoo_model_load_peak_bytes", model)] == after["load_peak_bytes"]
    assert metrics[("convzoo_model_memory_bytes", model)] == after["memory_bytes"]  # what the budget counts
    assert metrics[("convzoo_model_loads_total", model | {("outcome", "ok")})] == 1
    assert metrics[("convzoo_model_load_seconds_total", model)] > 0
    assert (
        metrics[("convzoo_process_resident_bytes", frozenset())]
        > metrics[("convzoo_process_baseline_bytes", frozenset())]
        > 0
    )


async def test_size_aware_eviction_keeps_a_small_hot_model(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    small, mid, big = fashion_models(zoo)[:3]
    # The mid model's margin in the budget comes from its known size, not from one RSS reading: a load
    # measured in a process that has freed memory before can read a few MB, or nothing, too low.
    mid_bytes = 40_000_000
    install(zoo, mid.name, fat_model(mid, megabytes=mid_bytes // 1_000_000))
    install(zoo, big.name, fat_model(big, megabytes=24))
    default = zoo.registry.default
    async with client_for(zoo) as client:  # the footprints, measured with room for everything
        manager = manager_of(client)
        for name in (small.name, mid.name, big.name):
            assert (await classify(client, fashion, name)).status_code == 200
        steady = {n: manager.state(n).memory_estimate_bytes for n in (default, small.name)}
        big_peak = manager.state(big.name).load_estimate_bytes
    # Room to load the big model beside the default and the small one, not beside the mid one as well.
    budget = steady[default] + steady[small.name] + big_peak + mid_bytes // 2
    async with client_for(zoo, memory_budget_mb=budget / 1e6) as client:
        manager = manager_of(client)
        for name in (mid.name, big.name):  # measured again by this process
            assert (await classify(client, fashion, name)).status_code == 200

        async def unloaded() -> bool:
            return manager.unload(big.name)

        await until(unloaded, 5, "big unloaded")
        for _ in range(10):
            assert (await classify(client, fashion, small.name)).status_code == 200
        assert (await classify(client, fashion, mid.name)).status_code == 200
        # Least-recently-used would now evict the small model first, then the mid one as well.
        assert (await classify(client, fashion, big.name)).status_code == 200
        assert manager.loaded_bytes() <= budget
        assert manager.state(small.name).loads == 1 and manager.state(small.name).is_loaded
        assert not manager.state(mid.name).is_loaded and manager.state(big.name).is_loaded
        assert manager.state(default).is_loaded  # pinned
        metrics = samples((await client.get("/metrics")).text)
    evicted = {
        dict(labels)["model"]: (dict(labels)["reason"], value)
        for (name, labels), value in metrics.items()
        if name == "convzoo_model_evictions_total"
    }
    assert small.name not in evicted and evicted[mid.name] == ("budget", 1.0)
