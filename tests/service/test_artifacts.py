"""Which artifacts may load (service/core/artifacts.py), on small files: paths that stay inside the model
directory, the registry's sha256, and the checks made before any load. Through the HTTP API with real
models: test_manager.py and tests/security/test_models.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.core.artifacts import ArtifactProblem, checked_artifact, resolve_artifact, static_problem
from service.core.registry import ModelEntry, Registry
from service.core.settings import Settings

CONTENT = b"not really a graph, but the checks here never parse it"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    (root / "m.onnx").write_bytes(CONTENT)
    (root / "sub").mkdir()
    (root / "sub" / "n.onnx").write_bytes(CONTENT)
    (tmp_path / "outside.onnx").write_bytes(CONTENT)
    (root / "escape.onnx").symlink_to(tmp_path / "outside.onnx")
    (root / "inside-link.onnx").symlink_to(root / "m.onnx")
    return root


def entry_for(registry: Registry, path: str, **artifact: object) -> ModelEntry:
    real = next(m for m in registry.models if m.weights.kind != "random")
    fields = {"path": path, "bytes": len(CONTENT), "sha256": hashlib.sha256(CONTENT).hexdigest(), **artifact}
    return real.model_copy(update={"artifact": real.artifact.model_copy(update=fields)})


@pytest.mark.parametrize(
    ("path", "real"),
    [
        ("m.onnx", "m.onnx"),
        ("./m.onnx", "m.onnx"),
        ("sub/n.onnx", "sub/n.onnx"),
        ("inside-link.onnx", "m.onnx"),
    ],
)
def test_paths_inside_the_model_directory_resolve(models: Path, path: str, real: str) -> None:
    assert resolve_artifact(models, path) == (models / real).resolve()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.onnx", "not inside the model directory"),
        ("sub/../m.onnx", "not inside the model directory"),  # any `..` is refused, even one that stays
        ("escape.onnx", "not inside the model directory"),
        ("", "not inside the model directory"),
        ("missing.onnx", "missing"),
        ("sub", "not a regular file"),
    ],
)
def test_paths_that_leave_or_miss_are_refused(models: Path, path: str, reason: str) -> None:
    with pytest.raises(ArtifactProblem, match=reason) as caught:
        resolve_artifact(models, path)
    assert str(models.parent) not in str(caught.value)  # safe to show to clients


def test_an_absolute_path_is_refused_even_inside(models: Path) -> None:
    with pytest.raises(ArtifactProblem, match="not inside the model directory"):
        resolve_artifact(models, str(models / "m.onnx"))


def test_the_content_must_match_the_registry(models: Path, committed_registry: Registry) -> None:
    assert checked_artifact(entry_for(committed_registry, "m.onnx"), models) == (models / "m.onnx").resolve()
    with pytest.raises(ArtifactProblem, match="sha256"):
        checked_artifact(entry_for(committed_registry, "m.onnx", sha256="0" * 64), models)
    with pytest.raises(ArtifactProblem, match="not built"):
        checked_artifact(entry_for(committed_registry, "m.onnx", sha256=None, bytes=None), models)


def test_checks_before_any_load(models: Path, committed_registry: Registry) -> None:
    settings = Settings(models_dir=models, memory_budget_mb=1.0)
    ok = entry_for(committed_registry, "m.onnx")
    assert static_problem(ok, settings) is None
    assert "not built" in (
        static_problem(entry_for(committed_registry, "m.onnx", sha256=None), settings) or ""
    )
    assert "missing" in (static_problem(entry_for(committed_registry, "gone.onnx"), settings) or "")
    big = entry_for(committed_registry, "m.onnx", bytes=1_000_001)
    assert "larger than the memory budget" in (static_problem(big, settings) or "")
    random = ok.model_copy(update={"weights": ok.weights.model_copy(update={"kind": "random"})})
    assert "CONVZOO_ALLOW_RANDOM_WEIGHTS" in (static_problem(random, settings) or "")
    assert static_problem(random, Settings(models_dir=models, allow_random_weights=True)) is None
