"""Depth and MACs read off real exported graphs, against the papers' layer counts and torchvision's figures."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torchvision.models import get_model, get_model_weights

from export.fashion.nets import build_net
from export.graph import gmacs, weight_layer_depth
from export.onnx_export import export_onnx

# Minutes of exports and fuzzing: `make test-long` (CI runs it; docs in the README).
pytestmark = pytest.mark.slow

# The layer counts the architectures are named after (weight layers on the longest path).
PAPER_DEPTHS = {
    "alexnet": 8,
    "vgg16": 16,
    "vgg19": 19,
    "googlenet": 22,
    "resnet50": 50,
    "resnet152": 152,
}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx.ModelProto]:
    """Weightless exports (structure only) through the project's exporter, once per module."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("graphs")
    graphs = {}
    for name in PAPER_DEPTHS:
        module = get_model(name, weights=None, **({"init_weights": False} if name == "googlenet" else {}))
        graphs[name] = _export(module, (3, 224, 224), out / f"{name}.onnx")
    graphs["fmnist-lenet5"] = _export(build_net("fmnist-lenet5"), (1, 28, 28), out / "lenet5.onnx")
    return graphs


def _export(module: torch.nn.Module, shape: tuple[int, ...], path: Path) -> onnx.ModelProto:
    return export_onnx(
        module.eval(), sample=torch.zeros(1, *shape), path=path, metadata={}, with_weights=False
    )


@pytest.mark.parametrize(("name", "depth"), [*PAPER_DEPTHS.items(), ("fmnist-lenet5", 5)])
def test_depth_matches_the_papers(graphs: dict[str, onnx.ModelProto], name: str, depth: int) -> None:
    assert weight_layer_depth(graphs[name]) == depth


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "resnet50", "resnet152"])
def test_gmacs_match_torchvision_ops(graphs: dict[str, onnx.ModelProto], name: str) -> None:
    published = get_model_weights(name).DEFAULT.meta["_ops"]
    assert gmacs(graphs[name], (3, 224, 224)) == pytest.approx(published, rel=0.01)


def test_gmacs_accepts_the_batch_in_the_shape(graphs: dict[str, onnx.ModelProto]) -> None:
    lenet = graphs["fmnist-lenet5"]
    # conv1 28*28*6*25 + conv2 10*10*16*150 + fc 400*120 + 120*84 + 84*10
    expected = (117_600 + 240_000 + 48_000 + 10_080 + 840) / 1e9
    assert gmacs(lenet, (1, 28, 28)) == pytest.approx(expected)
    assert gmacs(lenet, (7, 1, 28, 28)) == pytest.approx(expected)  # per image: the batch is fixed at 1


def _matmul_graph(second_operand_is_weight: bool) -> onnx.ModelProto:
    """x -> MatMul(x, W) -> MatMul(h, h^T or W2): the second product is attention-like unless W2 is a weight."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], [0.0] * 64)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [8, 4], [0.0] * 32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    if second_operand_is_weight:
        nodes.append(helper.make_node("MatMul", ["h", "w2"], ["y"]))
    else:
        nodes += [
            helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["h", "ht"], ["y"]),
        ]
    nodes.reverse()  # the file's node order is not trusted: depth sorts topologically itself
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_matmul_counts_only_against_a_weight() -> None:
    assert weight_layer_depth(_matmul_graph(second_operand_is_weight=True)) == 2
    assert weight_layer_depth(_matmul_graph(second_operand_is_weight=False)) == 1


def test_matmul_macs_count_every_product() -> None:
    assert gmacs(_matmul_graph(True), (4, 8)) == pytest.approx((4 * 8 * 8 + 4 * 4 * 8) / 1e9)
    assert gmacs(_matmul_graph(False), (4, 8)) == pytest.approx((4 * 8 * 8 + 4 * 4 * 8) / 1e9)


def test_depth_is_independent_of_node_order(graphs: dict[str, onnx.ModelProto]) -> None:
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(graphs["googlenet"])
    nodes = list(shuffled.graph.node)
    random.Random(0).shuffle(nodes)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(nodes)
    assert weight_layer_depth(shuffled) == 22


def test_control_flow_is_refused() -> None:
    branch = helper.make_graph([], "branch", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    model = helper.make_model(helper.make_graph([node], "g", [cond], [out]))
    with pytest.raises(ValueError, match="subgraph"):
        weight_layer_depth(model)
