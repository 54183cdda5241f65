"""A model's versions in the registry: add one (new weights beside the old, never over them), and set the
serving policy: promote one to stable, canary or shadow one for a percent of the requests, retire one.
The running service takes the change on SIGHUP (docs/rollouts.md)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from service.core.registry import (
    Artifact,
    ModelEntry,
    Provenance,
    Registry,
    Serving,
    Share,
    Version,
    Weights,
    sha256_file,
)


class VersionError(ValueError):
    """A version operation the registry cannot take (unknown model or version, a duplicate, ...)."""


def _replace(registry: Registry, entry: ModelEntry) -> Registry:
    models = [entry if m.name == entry.name else m for m in registry.models]
    # validated as a whole again: the policy must name versions the entry has
    return Registry.model_validate({**registry.model_dump(), "models": [m.model_dump() for m in models]})


def _entry(registry: Registry, model: str) -> ModelEntry:
    try:
        return registry.get(model)
    except ValueError:
        raise VersionError(f"no model {model!r} in the registry") from None


def _known(entry: ModelEntry, version: str) -> None:
    if version not in entry.version_names:
        raise VersionError(
            f"model {entry.name!r} has no version {version!r}; its versions: {entry.version_names}"
        )


def artifact_path(entry: ModelEntry, version: str) -> str:
    """Where a version's artifact goes: beside the entry's own, named after the version."""
    own = Path(entry.artifact.path)
    return str(own.with_name(f"{own.stem}.{version}{own.suffix}"))


def add_version(
    registry: Registry,
    models_dir: Path,
    model: str,
    version: str,
    onnx_file: Path,
    *,
    weights: Weights | None = None,
    provenance: Provenance | None = None,
) -> Registry:
    """Copy `onnx_file` into the model directory as version `version` of `model`, with its size and
    sha256; the other versions and the policy stay. Its accuracy is not known until measured (`None`),
    its architecture's figures (parameters, depth, FLOPs) are the entry's."""
    entry = _entry(registry, model)
    if version in entry.version_names:
        raise VersionError(f"model {model!r} already has version {version!r}: a new version needs a new name")
    relative = artifact_path(entry, version)
    target = models_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, target)
    size = target.stat().st_size
    metrics = entry.metrics.model_copy(
        update={
            "size_mb": round(size / 1e6, 3),
            "top1": None,
            "top5": None,
            "accuracy_source": None,
            "accuracy_split": None,
            "accuracy_samples": None,
            "accuracy_date": None,
        }
    )
    added = Version(
        version=version,
        artifact=Artifact(path=relative, bytes=size, sha256=sha256_file(target)),
        weights=weights
        or Weights(kind=entry.weights.kind, source=f"{onnx_file.name}, added {dt.date.today()}"),
        metrics=metrics,
        parity=None,
        latency=None,
        provenance=provenance,
    )
    return _replace(registry, entry.model_copy(update={"versions": [*entry.versions, added]}))


def promote(registry: Registry, model: str, version: str) -> Registry:
    """`version` becomes the stable one; a canary or shadow of that version ends (it is now the stable)."""
    entry = _entry(registry, model)
    _known(entry, version)
    policy = entry.policy
    canary = policy.canary if policy.canary and policy.canary.version != version else None
    shadow = policy.shadow if policy.shadow and policy.shadow.version != version else None
    return _replace(
        registry, entry.model_copy(update={"serving": Serving(stable=version, canary=canary, shadow=shadow)})
    )


def canary(registry: Registry, model: str, version: str | None, percent: float = 10.0) -> Registry:
    """`version` answers `percent` of the clients (None: no canary)."""
    return _share(registry, model, "canary", version, percent)


def shadow(registry: Registry, model: str, version: str | None, percent: float = 100.0) -> Registry:
    """`version` gets a copy of `percent` of the requests, compared and never answered (None: no shadow)."""
    return _share(registry, model, "shadow", version, percent)


def _share(registry: Registry, model: str, role: str, version: str | None, percent: float) -> Registry:
    """The policy's `role` (canary or shadow) given to `version` at `percent`, or ended (None)."""
    entry = _entry(registry, model)
    share = None
    if version is not None:
        _known(entry, version)
        share = Share(version=version, percent=percent)
    return _replace(
        registry, entry.model_copy(update={"serving": entry.policy.model_copy(update={role: share})})
    )


def retire(registry: Registry, model: str, version: str) -> Registry:
    """Remove a version the policy does not name (its artifact file stays, for a roll back by hand)."""
    entry = _entry(registry, model)
    _known(entry, version)
    if version == entry.version:
        raise VersionError(f"version {version!r} is the entry's own: it stays (promote another instead)")
    policy = entry.policy
    if version in (policy.stable, *(s.version for s in (policy.canary, policy.shadow) if s)):
        raise VersionError(
            f"version {version!r} is served ({policy.model_dump(exclude_none=True)}): change the policy first"
        )
    return _replace(
        registry, entry.model_copy(update={"versions": [v for v in entry.versions if v.version != version]})
    )
