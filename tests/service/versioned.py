"""A zoo whose default model has several versions with different answers: each version a real ONNX graph
that ranks one class first whatever the image (so a test reads off its answer which version answered),
added to the registry by the export stage's own version commands (export/versions.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper

from export import versions
from service.core.registry import ModelEntry, Registry
from tests.artifacts import classifier_bytes, install_artifact
from tests.service.conftest import Zoo

OWN_CLASS = 1  # the entry's own version answers class 1 (Trouser), version "v2" class 2 (Pullover)
V2_CLASS = 2


def constant_model(entry: ModelEntry, winner: int) -> bytes:
    """Logits that rank class `winner` first for any image (the image still flows through the graph)."""
    features = int(np.prod([int(d) for d in entry.input.shape[1:]]))
    bias = np.zeros(entry.num_classes, np.float32)
    bias[winner] = 3.0
    nodes = [
        helper.make_node("Flatten", [entry.input.name], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["zero"]),
        helper.make_node("Add", ["zero", "bias"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((features, entry.num_classes), np.float32), "w"),
        numpy_helper.from_array(bias, "bias"),
    ]
    return classifier_bytes(entry, nodes, inits, f"constant-{winner}")


def add_version(zoo: Zoo, model: str, version: str, data: bytes, scratch: Path) -> None:
    """`data` as version `version` of `model`, through the export stage (the policy unchanged)."""
    onnx_file = scratch / f"{model}-{version}.onnx"
    onnx_file.write_bytes(data)
    zoo.save(versions.add_version(zoo.registry, zoo.models_dir, model, version, onnx_file))


def versioned_zoo(zoo: Zoo, scratch: Path, *, delay_us: int | None = None) -> str:
    """Make the zoo's default model answer OWN_CLASS, add version "v2" answering V2_CLASS, and a corrupt
    version "broken" (its sha256 right, its bytes no ONNX model); returns the model's name. `delay_us`:
    the model's queue delay (a request then stays in flight that long)."""
    name = zoo.registry.default
    entry = zoo.registry.get(name)
    install_artifact(zoo, name, constant_model(entry, OWN_CLASS), f"{name}.own.onnx")
    add_version(zoo, name, "v2", constant_model(entry, V2_CLASS), scratch)
    add_version(zoo, name, "broken", b"this is no ONNX model" * 10, scratch)
    if delay_us is not None:
        registry = zoo.registry
        batching = {"max_batch_size": 8, "max_queue_delay_us": delay_us}
        models = [
            m.model_dump() | ({"batching": batching} if m.name == name else {}) for m in registry.models
        ]
        zoo.save(Registry.model_validate({**registry.model_dump(), "models": models}))
    return name


def set_policy(
    zoo: Zoo,
    model: str,
    *,
    stable: str | None = None,
    canary: tuple[str, float] | None = None,
    shadow: tuple[str, float] | None = None,
) -> None:
    """Write a serving policy as the export stage's commands do (stable: the entry's own by default)."""
    registry = versions.promote(zoo.registry, model, stable or zoo.registry.get(model).version)
    registry = versions.canary(registry, model, *(canary or (None,)))
    registry = versions.shadow(registry, model, *(shadow or (None,)))
    zoo.save(registry)
