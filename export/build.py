"""Writing the registry: merging freshly built entries into registry.yaml, and the export provenance."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from service.core.registry import SCHEMA_VERSION, ModelEntry, Registry, load_registry, save_registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_PATH = ROOT / "registry.yaml"
MODELS_DIR = ROOT / "models"
FASHION_DATASET = "fashion-mnist"
# Written into every entry, so that registry.yaml says how uploads are decoded: large ones at reduced size
# (`Preprocessing.reduce_at_decode`; its agreement with full decoding: docs/preprocessing.md).
REDUCE_AT_DECODE = True
_LIBRARIES = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# The model that answers a request naming none: users send photos, so a pretrained ImageNet model.
PHOTO_DEFAULT = "efficientnet_lite0"


def _default_model(models: list[ModelEntry], previous: str | None) -> str:
    """The bundled photo model once built with real weights; else the best measured Fashion-MNIST model
    (not a quantized variant); else the previous default while it still exists."""
    photo = next((m for m in models if m.name == PHOTO_DEFAULT), None)
    if photo is not None and photo.built and photo.weights.kind == "pretrained":
        return photo.name
    measured = [
        m
        for m in models
        if m.dataset == FASHION_DATASET and m.metrics.top1 is not None and m.quantization is None
    ]
    if measured:
        return max(measured, key=lambda m: (m.metrics.top1 or 0.0, m.name)).name
    names = [m.name for m in models]
    return previous if previous in names else names[0]


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    # builds of different zoos may finish at the same moment: the read-modify-write of the registry
    # is serialised on its directory, so no entry is lost
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merge_into_registry(path: Path, entries: list[ModelEntry], label_sets: dict[str, list[str]]) -> Registry:
    """Replace same-named entries (others stay, in order; new ones are appended) and write `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):
        return _merge(path, entries, label_sets)


def _merge(path: Path, entries: list[ModelEntry], label_sets: dict[str, list[str]]) -> Registry:
    current = load_registry(path) if path.exists() else None
    models = list(current.models) if current else []
    sets = dict(current.label_sets) if current else {}
    sets.update(label_sets)
    for entry in entries:
        index = next((i for i, m in enumerate(models) if m.name == entry.name), None)
        if index is None:
            models.append(entry)
        else:
            models[index] = entry
    registry = Registry(
        schema_version=SCHEMA_VERSION,  # type: ignore[arg-type]
        default=_default_model(models, current.default if current else None),
        label_sets=sets,
        models=models,
    )
    save_registry(registry, path)
    return registry
