"""Real ONNX graphs with the shape of a registry entry, built to exercise the model lifecycle: one whose
footprint loaded is far larger than its file, one whose load takes a while. Both are made by ONNX Runtime's
own constant folding at load time, so no clock or allocation is faked."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from service.core.registry import ModelEntry
from tests.artifacts import classifier_bytes, install_artifact
from tests.service.conftest import Zoo


def _graph(entry: ModelEntry, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str) -> bytes:
    features = int(np.prod([int(d) for d in entry.input.shape[1:]]))
    head = [
        helper.make_node("Flatten", [entry.input.name], ["flat"]),
        helper.make_node("Slice", ["weights", "zero", "features"], ["w1"]),  # features x hidden
        helper.make_node("MatMul", ["flat", "w1"], ["hidden"]),
        helper.make_node("ConstantOfShape", ["fc_shape"], ["fc"], value=_scalar(0.01)),
        helper.make_node("MatMul", ["hidden", "fc"], ["logits"]),
    ]
    inits = [
        *inits,
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([features], np.int64), "features"),
    ]
    return classifier_bytes(entry, [*nodes, *head], inits, name)


def _scalar(value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([value], np.float32))


def fat_model(entry: ModelEntry, *, megabytes: int) -> bytes:
    """A file of a few hundred bytes whose weights (a constant folded when the session is built) take
    `megabytes` MB once loaded."""
    features = int(np.prod([int(d) for d in entry.input.shape[1:]]))
    hidden = megabytes * 1_000_000 // (4 * features)
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["weights"], value=_scalar(0.001))]
    inits = [
        numpy_helper.from_array(np.array([features, hidden], np.int64), "w_shape"),
        numpy_helper.from_array(np.array([hidden, entry.num_classes], np.int64), "fc_shape"),
    ]
    return _graph(entry, nodes, inits, "fat")


def slow_loading_model(entry: ModelEntry, *, matmuls: int, n: int = 1024) -> bytes:
    """A small model whose session build folds `matmuls` products of n x n constants (about 25 ms each
    for n=1024 on one core here): its load takes a while, its inference does not."""
    nodes = [helper.make_node("ConstantOfShape", ["m_shape"], ["m0"], value=_scalar(1.0 / n))]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "m0"], [f"m{i + 1}"]))
    nodes.append(helper.make_node("Identity", [f"m{matmuls}"], ["weights"]))
    inits = [
        numpy_helper.from_array(np.array([n, n], np.int64), "m_shape"),
        numpy_helper.from_array(np.array([n, entry.num_classes], np.int64), "fc_shape"),
    ]
    return _graph(entry, nodes, inits, "slow-loading")


def install(zoo: Zoo, name: str, data: bytes) -> None:
    """Write `data` as entry `name`'s artifact, size and checksum recorded in the registry."""
    install_artifact(zoo, name, data, f"{name}.lifecycle.onnx")


def wide_activations_model(entry: ModelEntry, *, megabytes_per_image: int) -> bytes:
    """A small file whose run holds about `megabytes_per_image` MB of activations for each image: the
    image tiled into one wide tensor, summed back, then the usual head."""
    features = int(np.prod([int(d) for d in entry.input.shape[1:]]))
    copies = megabytes_per_image * 1_000_000 // (4 * features)
    nodes = [
        helper.make_node("Flatten", [entry.input.name], ["flat0"]),
        helper.make_node("Tile", ["flat0", "repeats"], ["wide"]),  # batch x (copies * features)
        helper.make_node("Reshape", ["wide", "wide_shape"], ["stacked"]),  # batch x copies x features
        helper.make_node("ReduceSum", ["stacked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("MatMul", ["summed", "head"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, copies], np.int64), "repeats"),
        numpy_helper.from_array(np.array([-1, copies, features], np.int64), "wide_shape"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.full((features, entry.num_classes), 0.001, np.float32), "head"),
    ]
    return classifier_bytes(entry, nodes, inits, "wide-activations")
