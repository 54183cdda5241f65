"""Which artifacts may be loaded: paths that stay inside the model directory, the registry's sha256, and the
checks that need no load (built, random weights allowed, the file within the memory budget)."""

from __future__ import annotations

from pathlib import Path

from service.core.registry import ModelEntry, sha256_file
from service.core.settings import Settings


class ArtifactProblem(Exception):
    """An artifact that must not be loaded; the message is safe to show to clients."""


class ArtifactMissing(ArtifactProblem):
    """No file at the artifact's path: the model is not built here."""


def file_bytes(entry: ModelEntry) -> int:
    """The artifact's size: the registry's byte count, else its `size_mb`."""
    if entry.artifact.bytes is not None:
        return entry.artifact.bytes
    return int((entry.metrics.size_mb or 0.0) * 1_000_000)


def resolve_artifact(models_dir: Path, relative: str) -> Path:
    """The artifact's real path, which must stay inside `models_dir` (no `..`, absolute paths, escaping links)."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArtifactProblem("the artifact path in the registry is not inside the model directory")
    root = models_dir.resolve()
    try:
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ArtifactMissing("the artifact file is missing") from None
    if not real.is_relative_to(root):
        raise ArtifactProblem("the artifact path in the registry is not inside the model directory")
    if not real.is_file():
        raise ArtifactProblem("the artifact is not a regular file")
    return real


def checked_artifact(entry: ModelEntry, models_dir: Path) -> Path:
    """The path of a built artifact inside `models_dir` whose content matches the registry's sha256. External
    data outside the model directory is refused when ONNX Runtime builds the session (tests/security)."""
    if not entry.built:
        raise ArtifactMissing("the artifact is not built")
    path = resolve_artifact(models_dir, entry.artifact.path)
    if sha256_file(path) != entry.artifact.sha256:
        raise ArtifactProblem("the artifact's sha256 does not match the registry")
    return path


def missing(entry: ModelEntry, models_dir: Path) -> str | None:
    """Why the model is not built here (no artifact recorded, or no file), else None."""
    if not entry.built:
        return "the artifact is not built"
    try:
        resolve_artifact(models_dir, entry.artifact.path)
    except ArtifactMissing as exc:
        return str(exc)
    except ArtifactProblem:
        return None  # there, but wrong: static_problem says how
    return None


def static_problem(entry: ModelEntry, settings: Settings) -> str | None:
    """Why the model can never be served with these settings, found without hashing or loading it; None if
    nothing is wrong yet."""
    if not entry.built:
        return "the artifact is not built"
    if entry.weights.kind == "random" and not settings.allow_random_weights:
        return "random weights are served only with CONVZOO_ALLOW_RANDOM_WEIGHTS=true"
    if file_bytes(entry) > settings.memory_budget_bytes:
        return "the model is larger than the memory budget (CONVZOO_MEMORY_BUDGET_MB)"
    try:
        resolve_artifact(settings.models_dir, entry.artifact.path)
    except ArtifactProblem as exc:
        return str(exc)
    return None
