"""The committed artifacts (the Fashion-MNIST zoo and the photo model) are the ones the registry describes, and score what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from export.fashion.data import load_split, to_input
from export.onnx_export import evaluate_onnx
from service.core.registry import Registry, sha256_file

FASHION = [
    "fmnist-lenet5", "fmnist-alexnet", "fmnist-vgg16", "fmnist-vgg19", "fmnist-googlenet",
    "fmnist-resnet-v1", "fmnist-resnet-v2", "fmnist-plain20", "fmnist-resnet20",
]  # fmt: skip
BUNDLED = [*FASHION, "efficientnet_lite0"]


def test_committed_artifacts_match_the_registry_and_fit_the_budget(
    committed_registry: Registry, models_dir: Path
) -> None:
    total = 0
    for name in BUNDLED:
        entry = committed_registry.get(name)
        path = models_dir / entry.artifact.path
        assert path.is_file(), name
        assert entry.artifact.bytes == path.stat().st_size, name
        assert entry.artifact.sha256 == sha256_file(path), name
        total += path.stat().st_size
    assert total <= 40e6


@pytest.mark.parametrize("name", ["fmnist-lenet5", "fmnist-resnet20", "fmnist-vgg16"])
def test_re_evaluation_matches_the_registry(
    name: str, committed_registry: Registry, models_dir: Path, fashion_dir: Path
) -> None:
    entry = committed_registry.get(name)
    test = load_split("test", fashion_dir)
    x = to_input(test.images, entry.preprocessing.mean[0], entry.preprocessing.std[0])
    top1, top5 = evaluate_onnx(models_dir / entry.artifact.path, x, test.labels, batch_size=1000)
    assert entry.metrics.top1 is not None and entry.metrics.top5 is not None
    assert abs(top1 - entry.metrics.top1) <= 0.002, (top1, entry.metrics.top1)
    assert abs(top5 - entry.metrics.top5) <= 0.002, (top5, entry.metrics.top5)
    assert np.isclose(entry.metrics.size_mb or 0, (entry.artifact.bytes or 0) / 1e6, atol=1e-3)


def test_artifacts_carry_no_build_traces(committed_registry: Registry, models_dir: Path) -> None:
    # The exporter annotates nodes with Python stack traces naming the build machine's files.
    for name in BUNDLED:
        entry = committed_registry.get(name)
        proto = onnx.load(str(models_dir / entry.artifact.path), load_external_data=False)
        graph = proto.graph
        annotated = [i.name for i in (*graph.node, *graph.value_info, *graph.initializer) if i.metadata_props]
        assert not annotated, f"{entry.name}: {annotated[:3]}"
