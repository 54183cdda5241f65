"""A tiny training run through the command `make models` uses: a few hundred images, one epoch."""

from __future__ import annotations

from pathlib import Path

import onnx
from typer.testing import CliRunner

from export.cli import app
from export.fashion.data import load_split, to_input
from export.onnx_export import evaluate_onnx
from service.core.registry import load_registry, sha256_file


def test_a_tiny_build_writes_a_valid_entry_and_artifact(tmp_path: Path, fashion_dir: Path) -> None:
    out, registry_path = tmp_path / "models", tmp_path / "registry.yaml"
    args = ["build", "--zoo", "fashion", "--models", "fmnist-lenet5", "--epochs", "1",
            "--train-samples", "300", "--threads", "1", "--data", str(fashion_dir),
            "--out", str(out), "--registry", str(registry_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    registry = load_registry(registry_path)
    assert registry.default == "fmnist-lenet5"
    entry = registry.get("fmnist-lenet5")
    artifact = out / entry.artifact.path
    assert entry.artifact.path == "fmnist-lenet5.onnx"
    assert entry.artifact.sha256 == sha256_file(artifact) and entry.artifact.bytes == artifact.stat().st_size
    assert entry.provenance is not None and entry.provenance.recipe is not None
    recipe = entry.provenance.recipe
    assert (recipe.epochs, recipe.train_samples, recipe.seed) == (1, 300, 0)
    m = entry.metrics
    assert (m.accuracy_source, m.accuracy_split, m.accuracy_samples) == ("measured", "test", 10_000)
    # three optimiser steps teach little; what matters is that the figure is the artifact's own
    test = load_split("test", fashion_dir)
    x = to_input(test.images, entry.preprocessing.mean[0], entry.preprocessing.std[0])
    assert (m.top1, m.top5) == tuple(round(v, 4) for v in evaluate_onnx(artifact, x, test.labels))
    assert m.depth == 5 and m.params == 61_706
    assert entry.parity is not None and entry.parity.top1_agreement == 1.0
    assert entry.latency is not None and entry.latency.p50_ms > 0
    labels = {p.key: p.value for p in onnx.load(str(artifact)).metadata_props}
    assert "Ankle boot" in labels["convzoo.labels"] and '"color_mode":"L"' in labels["convzoo.preprocessing"]
    assert "fmnist-lenet5 *" in result.output and "Top-1" in result.output  # export ends with the table
