"""`python -m bench.draft`, the measurement docs/preprocessing.md records, on one small model."""

from __future__ import annotations

import onnxruntime as ort

from bench import draft
from service.core.registry import load_registry
from tests.paths import REPO


def test_the_agreement_is_measured_on_every_photo() -> None:
    registry = load_registry(REPO / "registry.yaml")
    entry = registry.get("fmnist-lenet5")
    session = ort.InferenceSession(
        str(REPO / "models" / entry.artifact.path), providers=["CPUExecutionProvider"]
    )
    images = draft.uploads(1)
    result = draft.measure(entry, session, registry.labels_of(entry.name), 1, images)
    assert result.images == len(images) == 8  # 5 photos of the tests, the 512x600 portrait, 2 examples
    assert result.reduced == 8  # every photo is more than twice 28 pixels on its shorter side
    assert 0.0 <= result.top1_agreement <= 1.0 and len(result.disagreements) == round(
        8 * (1 - result.top1_agreement)
    )
    assert 0.0 < result.max_abs_prob_diff < 1.0
    assert "| fmnist-lenet5 | 8 | x1 | 8 |" in draft.table([result])
