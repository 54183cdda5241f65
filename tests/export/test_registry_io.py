"""Merging built entries into registry.yaml, and the comparison table printed from it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from export.build import merge_into_registry
from export.cli import app
from export.table import COLUMNS, render
from service.core.registry import ModelEntry, Registry, load_registry, save_registry


def _with(entry: ModelEntry, name: str, top1: float) -> ModelEntry:
    metrics = entry.metrics.model_copy(update={"top1": top1, "top5": max(top1, entry.metrics.top5 or 0)})
    return entry.model_copy(update={"name": name, "metrics": metrics})


def test_merge_replaces_same_names_keeps_the_others_and_picks_the_best_default(
    committed_registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "registry.yaml"
    base = committed_registry.get("fmnist-vgg16")
    save_registry(
        Registry(
            schema_version=1,
            default="fmnist-a",
            label_sets=committed_registry.label_sets,
            models=[_with(base, "fmnist-a", 0.80), _with(base, "fmnist-b", 0.70)],
        ),
        path,
    )
    merge_into_registry(
        path, [_with(base, "fmnist-b", 0.95), _with(base, "fmnist-c", 0.90)], {"extra": ["x", "y"]}
    )
    merged = load_registry(path)
    assert [m.name for m in merged.models] == ["fmnist-a", "fmnist-b", "fmnist-c"]
    assert merged.get("fmnist-b").metrics.top1 == 0.95
    assert merged.default == "fmnist-b"
    assert merged.label_sets["extra"] == ["x", "y"] and "fashion-mnist" in merged.label_sets


def test_the_table_has_the_seed_columns_and_every_model(committed_registry: Registry) -> None:
    text = render(committed_registry)
    header = text.splitlines()[0]
    for column in ("Model", "Size", "Top-1", "Top-5", "Parameters", "Depth"):
        assert column in header
    assert COLUMNS[-1] == "Source"
    for m in committed_registry.models:
        assert m.name in text
    assert f"{committed_registry.default} *" in text


def test_python_m_export_table(registry_path: Path) -> None:
    result = CliRunner().invoke(app, ["table", "--registry", str(registry_path)])
    assert result.exit_code == 0, result.output
    assert "fmnist-resnet20" in result.output and "Parameters" in result.output
