"""A model's batch cutting comes from its registry entry's `batching`, else from the settings."""

from __future__ import annotations

import numpy as np
import pytest

from service.manager import ModelManager
from service.registry import Batching
from tests.service.conftest import Zoo, settings_for

pytestmark = pytest.mark.anyio


def _samples(manager: ModelManager, name: str, n: int) -> np.ndarray:
    shape = manager.entry(name).input.shape[1:]
    return np.zeros((n, *shape), dtype=np.float32)


async def _batch_sizes(manager: ModelManager, name: str, n: int) -> list[int]:
    import time

    _, timings = await manager.infer(name, _samples(manager, name, n), deadline=time.monotonic() + 30)
    return list(timings.batch_sizes)


async def test_the_registry_entry_overrides_the_settings(zoo: Zoo) -> None:
    registry = zoo.registry
    name = registry.default
    entries = [
        m.model_copy(update={"batching": Batching(max_batch_size=3, max_queue_delay_us=20_000)}) if m.name == name else m
        for m in registry.models
    ]
    zoo.save(registry.model_copy(update={"models": entries}))
    manager = ModelManager.from_settings(settings_for(zoo, max_batch_size=32, max_queue_delay_us=0, preload=[]))
    try:
        state = await manager.ensure_loaded(name)
        assert state.batcher is not None
        assert (state.batcher.max_batch_size, state.batcher.max_queue_delay_s) == (3, 0.02)
        assert sorted(await _batch_sizes(manager, name, 7)) == [1, 3, 3, 3, 3, 3, 3]  # batches of 3, 3 and 1
    finally:
        await manager.stop()


async def test_without_an_entry_the_settings_apply(zoo: Zoo) -> None:
    name = zoo.registry.default
    manager = ModelManager.from_settings(settings_for(zoo, max_batch_size=4, max_queue_delay_us=20_000, preload=[]))
    try:
        state = await manager.ensure_loaded(name)
        assert state.batcher is not None
        assert (state.batcher.max_batch_size, state.batcher.max_queue_delay_s) == (4, 0.02)
        assert sorted(await _batch_sizes(manager, name, 6)) == [2, 2, 4, 4, 4, 4]
    finally:
        await manager.stop()
