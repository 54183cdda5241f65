"""The IOBinding path (used on CUDA) gives the same logits as a plain run; checked here on the CPU device."""

from __future__ import annotations

import dataclasses

import numpy as np

from service.compute.runtime import load_model
from service.core.settings import Settings
from tests.service.conftest import Zoo


def test_iobinding_matches_a_plain_run(source_zoo: Zoo) -> None:
    registry = source_zoo.registry
    entry = registry.get(registry.default)
    model = load_model(
        source_zoo.artifact(entry.name),
        entry,
        Settings(intra_op_threads=1, calibration_s=0),
        max_batch_size=8,
    )
    assert model.bind_device is None  # CPU provider: plain runs
    bound = dataclasses.replace(model, bind_device="cpu")
    batch = np.random.default_rng(0).standard_normal((5, *model.sample_shape)).astype(np.float32)
    plain, via_binding = model.run(batch), bound.run(batch)
    assert via_binding.shape == (5, entry.num_classes) and via_binding.dtype == np.float32
    np.testing.assert_allclose(via_binding, plain, rtol=1e-5, atol=1e-5)
