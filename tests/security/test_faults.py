"""Faults: ONNX Runtime raising in the middle of serving fails only that batch's requests, with 500
problem details, and the next requests succeed; the CUDA provider's absence follows the readiness rule."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import onnxruntime as ort
import pytest

from tests.asgi import manager_of_client
from tests.security.conftest import smallest
from tests.service.conftest import ClientFactory, FashionSample, Zoo

pytestmark = pytest.mark.anyio


class FailOnce:
    """Fault injection on a real session: the next batch is fed to ONNX Runtime with a wrong shape, so
    ONNX Runtime itself raises (InvalidArgument) in the middle of serving; later batches run as usual."""

    def __init__(self, run) -> None:  # type: ignore[no-untyped-def]
        self.run = run
        self.armed = threading.Event()
        self.failed_sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.armed.is_set():
            self.armed.clear()
            self.failed_sizes.append(len(batch))
            out: np.ndarray = self.run(batch[..., :-1])  # one pixel column short: ORT rejects the shape
            return out
        out = self.run(batch)
        return out


async def test_onnx_runtime_raising_fails_only_that_batch(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    other = smallest(zoo.registry, exclude=(zoo.registry.default,))
    # One inference thread: with more, a burst is shared between idle threads and the three split up.
    async with client_for(zoo, max_queue_delay_us=300_000, max_batch_size=64, inference_threads=1) as client:
        manager = manager_of_client(client)
        batcher = manager.state(manager.default).batcher
        assert batcher is not None
        fault = FailOnce(batcher._run)
        batcher._run = fault

        def classify(i: int, model: str | None = None):  # type: ignore[no-untyped-def]
            params = {"model": model} if model else {}
            return client.post(
                "/classify", params=params, files={"file": (f"{i}.png", fashion.png(i), "image/png")}
            )

        fault.armed.set()
        # three requests that share one batch of the default model, one on another model meanwhile
        failed = await asyncio.gather(*(classify(i) for i in range(3)), classify(9, other.name))
        assert fault.failed_sizes == [3]
        for r in failed[:3]:
            assert r.status_code == 500, r.text
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["type"].endswith("inference-failed") and body["status"] == 500
            assert "Traceback" not in body["detail"] and "onnxruntime" not in body["detail"].lower()
        assert failed[3].status_code == 200, failed[3].text
        # the next requests on the same model succeed, and the service stays ready
        after = await asyncio.gather(*(classify(i) for i in range(3)))
        assert [r.status_code for r in after] == [200, 200, 200]
        assert (await client.get("/health/ready")).status_code == 200
        assert batcher.stats.batches_failed == 1 and batcher.stats.items_failed == 3


async def test_auto_providers_without_cuda_serve_on_the_cpu(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    # The readiness rule: `auto` falls back to the CPU and is ready; an explicit `cuda` that cannot start
    # makes the default model unavailable and readiness 503 with the reason (tests/service/test_manager.py).
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has CUDA: the fallback is not exercised")
    async with client_for(zoo, providers="auto") as client:
        assert (await client.get("/health/ready")).status_code == 200
        detail = (await client.get(f"/models/{zoo.registry.default}")).json()
        assert detail["providers"] == ["CPUExecutionProvider"]
        r = await client.post("/classify", files={"file": ("x.png", fashion.png(0), "image/png")})
        assert r.status_code == 200
