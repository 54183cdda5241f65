"""`python -m tests.service.held_load`: `python -m service` whose load of one model (HELD_MODEL) waits,
before it starts, until the file HELD_UNTIL exists. The load itself is the real one; only its start is
in the test's hands, so a test sees the model loading however fast this machine loads it."""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path

from service.compute.runtime import LoadedModel
from service.core.registry import ModelEntry
from service.models.footprint import LoadMemory
from service.models.loader import Loader

HOLD_LIMIT_S = 120  # a test that never lets go fails on its own deadline, not this one

_load = Loader.load_blocking


def _held_load(self: Loader, entry: ModelEntry, max_batch_size: int) -> tuple[LoadedModel, LoadMemory | None]:
    if entry.name == os.environ.get("HELD_MODEL"):
        gate = Path(os.environ["HELD_UNTIL"])
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return _load(self, entry, max_batch_size)


if __name__ == "__main__":
    Loader.load_blocking = _held_load  # type: ignore[method-assign]
    runpy.run_module("service", run_name="__main__", alter_sys=True)
