"""Architecture facts read off an ONNX graph: depth in weight layers, and multiply-accumulates.

Both figures are computed from the exported graph, never typed in, so they describe exactly what
the service runs.

Activations versus weights: a value is an *activation* when it depends on a data input of the
graph. Data inputs are the graph inputs with a symbolic (dynamic batch) dimension; when no input has
one, every graph input that is not an initializer. Everything else (initializers, constants, weights
listed as inputs with fixed shapes, weight names left dangling by a weightless export) is a weight.

Depth rule: a *weight layer* is a Conv, ConvTranspose or Gemm node, or a MatMul node with exactly
one activation operand (the other being a weight, possibly reshaped or transposed). A MatMul of two
activations, as in attention, is not a weight layer. Depth is the largest number of weight layers
on any path from a data input to a graph output.

MAC rule: multiply-accumulates of Conv, ConvTranspose, Gemm and every MatMul, per image (batch 1),
as torchvision's ``_ops`` "GFLOPS" count them. Additions of biases, normalisation, activations and
pooling are not counted.

Graphs with control flow (subgraph attributes) or model-local functions are refused rather than
measured wrongly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

import onnx
from onnx import shape_inference

WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

Shape = tuple[int, ...]


def weight_layer_depth(model: onnx.ModelProto) -> int:
    """Number of weight layers on the longest path of the graph (see the module docstring)."""
    graph = model.graph
    _require_flat(model)
    activations = _activation_values(graph)
    longest: dict[str, int] = {}
    for node in _topological(graph):
        depth = max((longest.get(name, 0) for name in node.input if name), default=0)
        if _is_weight_layer(node, activations):
            depth += 1
        for name in node.output:
            longest[name] = depth
    ends = [longest.get(o.name, 0) for o in graph.output] or list(longest.values())
    return max(ends, default=0)


def gmacs(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> float:
    """Multiply-accumulates per image, in billions, for an input of `input_shape` (batch included or not).

    The batch is fixed at 1 and shapes come from ONNX shape inference over the graph.
    """
    _require_flat(model)
    shapes = _infer_shapes(model, input_shape)
    total = 0
    for node in model.graph.node:
        if node.op_type in MAC_OPS and node.domain in ("", "ai.onnx"):
            total += _node_macs(node, shapes)
    return total / 1e9


def sort_topologically(model: onnx.ModelProto) -> None:
    """Reorder the graph's nodes in place so that every value is produced before it is used."""
    nodes = _topological(model.graph)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _require_flat(model: onnx.ModelProto) -> None:
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"node {node.name or node.op_type}: control-flow subgraphs are not supported")
        if (node.domain, node.op_type) in local:
            raise ValueError(f"node {node.name or node.op_type}: model-local functions are not supported")


def _data_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dynamic = [i for i in inputs if any(d.dim_param for d in i.type.tensor_type.shape.dim)]
    return dynamic or inputs


def _activation_values(graph: onnx.GraphProto) -> set[str]:
    active = {i.name for i in _data_inputs(graph)}
    for node in _topological(graph):
        if any(name in active for name in node.input if name):
            active.update(name for name in node.output if name)
    return active


def _is_weight_layer(node: onnx.NodeProto, activations: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in WEIGHT_OPS:
        return True
    if node.op_type == "MatMul":
        return sum(name in activations for name in node.input[:2]) == 1
    return False


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Kahn's algorithm over value dependencies; the file's node order is not trusted."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name:
                producer[name] = index
    consumers: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    pending = [0] * len(graph.node)
    for index, node in enumerate(graph.node):
        for source in {producer[n] for n in node.input if n in producer}:
            consumers[source].append(index)
            pending[index] += 1
    ready = deque(i for i, count in enumerate(pending) if count == 0)
    order: list[onnx.NodeProto] = []
    while ready:
        index = ready.popleft()
        order.append(graph.node[index])
        for nxt in consumers[index]:
            pending[nxt] -= 1
            if pending[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(graph.node):
        raise ValueError("the ONNX graph has a cycle")
    return order


def _infer_shapes(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, Shape]:
    """Concrete shapes of every value with the data input fixed to batch 1."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    data = _data_inputs(fixed.graph)
    if len(data) != 1:
        raise ValueError(f"gmacs needs exactly one data input, the graph has {len(data)}")
    batch_symbols = _set_input_shape(data[0], input_shape)
    # The exporter may name the batch axis differently on the outputs and in value_info.
    batch_symbols |= {
        o.type.tensor_type.shape.dim[0].dim_param
        for o in fixed.graph.output
        if o.type.tensor_type.shape.dim and o.type.tensor_type.shape.dim[0].dim_param
    }
    inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    shapes: dict[str, Shape] = {}
    for tensor in fixed.graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    values: Iterable[onnx.ValueInfoProto] = [
        *inferred.graph.input,
        *inferred.graph.value_info,
        *inferred.graph.output,
    ]
    for info in values:
        shape = _concrete(info, batch_symbols)
        if shape is not None:
            shapes.setdefault(info.name, shape)
    return shapes


def _set_input_shape(info: onnx.ValueInfoProto, input_shape: tuple[int, ...]) -> set[str]:
    dims = info.type.tensor_type.shape.dim
    full = (1, *input_shape) if len(input_shape) == len(dims) - 1 else (1, *input_shape[1:])
    if len(full) != len(dims):
        raise ValueError(f"input shape {input_shape} does not fit the graph input of rank {len(dims)}")
    symbols = {d.dim_param for d in dims if d.dim_param}
    for dim, size in zip(dims, full, strict=True):
        if dim.HasField("dim_value") and dim.dim_value != size:
            raise ValueError(f"input shape {input_shape} does not match the graph input's {dim.dim_value}")
        dim.dim_value = size
    # The same symbols elsewhere in the graph (value_info written by the exporter) mean batch 1.
    return symbols


def _concrete(info: onnx.ValueInfoProto, batch_symbols: set[str]) -> Shape | None:
    if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
        return None
    sizes: list[int] = []
    for dim in info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            sizes.append(dim.dim_value)
        elif dim.dim_param in batch_symbols:
            sizes.append(1)
        else:
            return None
    return tuple(sizes)


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int:
    def shape(name: str) -> Shape:
        if name not in shapes:
            raise ValueError(f"node {node.name or node.op_type}: the shape of {name!r} is unknown")
        return shapes[name]

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    out = shape(node.output[0])
    if node.op_type == "Conv":
        group = int(attrs.get("group", 1))
        kernel = attrs.get("kernel_shape") or shape(node.input[1])[2:]
        return math.prod(out) * (shape(node.input[0])[1] // group) * math.prod(kernel)
    if node.op_type == "ConvTranspose":
        group = int(attrs.get("group", 1))
        kernel = attrs.get("kernel_shape") or shape(node.input[1])[2:]
        return math.prod(shape(node.input[0])) * (out[1] // group) * math.prod(kernel)
    if node.op_type == "Gemm":
        a = shape(node.input[0])
        inner = a[0] if attrs.get("transA", 0) else a[1]
        return math.prod(out) * inner
    a = shape(node.input[0])  # MatMul
    return math.prod(out) * a[-1]
