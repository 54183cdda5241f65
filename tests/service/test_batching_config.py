"""A model's batch cutting comes from its registry entry's `batching`, else from the settings."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.registry import Batching
from service.models.manager import ModelManager
from tests.service.conftest import Zoo, settings_for

pytestmark = pytest.mark.anyio


def _samples(manager: ModelManager, name: str, n: int) -> np.ndarray:
    shape = [int(d) for d in manager.entry(name).input.shape[1:]]
    return np.zeros((n, *shape), dtype=np.float32)


async def _batch_sizes(manager: ModelManager, name: str, n: int) -> list[int]:
    import time

    _, timings = await manager.infer(name, _samples(manager, name, n), deadline=time.monotonic() + 30)
    return list(timings.batch_sizes)


async def test_the_registry_entry_overrides_the_settings(zoo: Zoo) -> None:
    registry = zoo.registry
    name = registry.default
    entries = [
        m.model_copy(update={"batching": Batching(max_batch_size=3, max_queue_delay_us=20_000)})
        if m.name == name
        else m
        for m in registry.models
    ]
    zoo.save(registry.model_copy(update={"models": entries}))
    manager = ModelManager.from_settings(
        settings_for(zoo, max_batch_size=32, max_queue_delay_us=0, preload=[], inference_threads=1)
    )
    try:
        state = await manager.ensure_loaded(name)
        assert state.batcher is not None
        assert (state.batcher.max_batch_size, state.batcher.max_queue_delay_s) == (3, 0.02)
        assert sorted(await _batch_sizes(manager, name, 7)) == [1, 3, 3, 3, 3, 3, 3]  # batches of 3, 3 and 1
    finally:
        await manager.stop()


async def test_without_an_entry_the_settings_apply(zoo: Zoo) -> None:
    name = zoo.registry.default
    manager = ModelManager.from_settings(
        settings_for(zoo, max_batch_size=4, max_queue_delay_us=20_000, preload=[], inference_threads=1)
    )
    try:
        state = await manager.ensure_loaded(name)
        assert state.batcher is not None
        assert (state.batcher.max_batch_size, state.batcher.max_queue_delay_s) == (4, 0.02)
        assert sorted(await _batch_sizes(manager, name, 6)) == [2, 2, 4, 4, 4, 4]
    finally:
        await manager.stop()


class SlowRecorder:
    """The real model's run, slowed down so that a burst meets idle workers; records batch sizes."""

    def __init__(self, manager: ModelManager, name: str) -> None:
        state = manager.state(name)
        assert state.model is not None
        self.model = state.model
        self.sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import time

        self.sizes.append(len(batch))
        time.sleep(0.05)
        return self.model.run(batch)


@pytest.mark.parametrize(("threads", "expected"), [(1, [8]), (2, [4, 4])])
async def test_a_burst_is_shared_between_idle_inference_threads(
    zoo: Zoo, threads: int, expected: list[int]
) -> None:
    import time

    from service.models.batcher import DynamicBatcher

    name = zoo.registry.default
    manager = ModelManager.from_settings(settings_for(zoo, preload=[]))
    try:
        await manager.ensure_loaded(name)
        run = SlowRecorder(manager, name)
        b = DynamicBatcher(
            name, run, max_batch_size=32, max_queue_delay_us=20_000, max_queue_size=64, threads=threads
        )
        try:
            samples = _samples(manager, name, 8)
            out, _ = await b.submit(samples, deadline=time.monotonic() + 30)
            assert sorted(run.sizes) == expected and out.shape[0] == 8
            np.testing.assert_allclose(out, run.model.run(samples), rtol=1e-4, atol=1e-4)
        finally:
            b.stop()
    finally:
        await manager.stop()
