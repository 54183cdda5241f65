"""Test artifacts: real ONNX graphs with a registry entry's input and output, and installing one as an
entry's artifact in a zoo (the registry's size and checksum kept true)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from service.core.registry import ModelEntry, Registry
from tests.service.conftest import Zoo


def classifier_bytes(
    entry: ModelEntry, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str
) -> bytes:
    """`nodes` (from the entry's input to `logits`) as a checked, serialised model the service can load."""
    shape = ["batch", *entry.input.shape[1:]]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(entry.input.name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", entry.num_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def with_entry(target: Zoo, name: str, **artifact: object) -> None:
    """Rewrite one registry entry's artifact fields in the zoo."""
    registry = target.registry
    models = [
        m.model_copy(update={"artifact": m.artifact.model_copy(update=artifact)}) if m.name == name else m
        for m in registry.models
    ]
    target.save(
        Registry.model_validate({**registry.model_dump(), "models": [m.model_dump() for m in models]})
    )


def install_artifact(target: Zoo, name: str, data: bytes, filename: str) -> Path:
    """Write `data` into the zoo's model directory and point entry `name` at it, checksum included."""
    path = target.models_dir / filename
    path.write_bytes(data)
    with_entry(target, name, path=filename, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return path
