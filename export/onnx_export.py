"""PyTorch -> ONNX with the torch.export-based (dynamo) exporter, and the checks run on the result.

The dynamo exporter is torch 2.14's default and the maintained one: it folds batch normalisation into
the convolutions and writes a clean opset-18 graph. The TorchScript exporter still works but is
deprecated and leaves Identity nodes behind.
"""

from __future__ import annotations

import platform
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.core.registry import Host, Latency, Parity

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"


def export_onnx(
    module: torch.nn.Module,
    *,
    sample: torch.Tensor,
    path: Path,
    metadata: dict[str, str],
    opset: int = 18,
    with_weights: bool = True,
) -> onnx.ModelProto:
    """Export `module` in eval mode to one self-contained ONNX file at `path` and return its proto.

    Input "input" and output "logits" share a dynamic batch axis named "batch"; `metadata` goes into the
    model's metadata_props. `with_weights=False` leaves the weights out (a structural graph only)."""
    module.eval()
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (sample,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto if with_weights else _without_weights(program.model_proto)
    _name_batch_axis(proto)
    strip_trace_metadata(proto)
    proto.producer_name = "convzoo-export"
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        proto.metadata_props.add(key=key, value=value)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside and moved into place, so a reader never sees half a file
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
    if with_weights:
        onnx.checker.check_model(str(tmp), full_check=True)
    else:
        onnx.checker.check_model(proto)
    tmp.replace(path)
    return proto


def _without_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its initializers dropped; their names stay as typed graph inputs."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(proto)
    graph = stripped.graph
    known = {i.name for i in graph.input}
    for tensor in graph.initializer:
        if tensor.name not in known:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    del graph.initializer[:]
    return stripped


def strip_trace_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node and per-value annotations (Python stack traces with the build
    machine's file paths, FX node names): they describe the build, not the model."""
    graph = proto.graph
    for item in (*graph.node, *graph.value_info, *graph.initializer, *graph.input, *graph.output):
        del item.metadata_props[:]


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    # torch.export may call the symbol s0 and similar; the registry and the service expect "batch"
    for value in (*proto.graph.input[:1], *proto.graph.output[:1]):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = BATCH_AXIS


def session(onnx_path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def check_parity(module: torch.nn.Module, onnx_path: Path, batch: torch.Tensor) -> Parity:
    """ONNX Runtime against PyTorch (eval mode) on one fixed batch."""
    module.eval()
    with torch.no_grad():
        expected = module(batch).float().numpy()
    got = session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    return Parity(
        samples=int(batch.shape[0]),
        max_abs_diff=float(np.abs(got - expected).max()),
        logit_scale=float(np.abs(expected).max()),
        top1_agreement=float((got.argmax(1) == expected.argmax(1)).mean()),
    )


def evaluate_onnx(
    onnx_path: Path, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500, threads: int = 2
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of the ONNX file on preprocessed `images` (N x C x H x W float32)."""
    sess = session(onnx_path, threads)
    top1 = top5 = 0
    for start in range(0, len(labels), batch_size):
        logits = sess.run([OUTPUT_NAME], {INPUT_NAME: images[start : start + batch_size]})[0]
        truth = labels[start : start + batch_size]
        best5 = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((best5[:, 0] == truth).sum())
        top5 += int((best5 == truth[:, None]).any(axis=1).sum())
    return top1 / len(labels), top5 / len(labels)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_latency(
    onnx_path: Path, sample: np.ndarray, *, seconds: float = 0.6, batch_size: int = 32, threads: int = 1
) -> Latency:
    """Batch-1 p50/p99 and throughput at `batch_size` on this host, with ONNX Runtime on the CPU."""
    sess = session(onnx_path, threads)
    one = sample[:1]
    for _ in range(5):
        sess.run([OUTPUT_NAME], {INPUT_NAME: one})
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        t0 = time.perf_counter()
        sess.run([OUTPUT_NAME], {INPUT_NAME: one})
        times.append(time.perf_counter() - t0)
    batch = np.repeat(sample[:1], batch_size, axis=0)
    sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2 or runs < 3:
        sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
        runs += 1
    elapsed = time.perf_counter() - t0
    ms = np.array(times) * 1e3
    return Latency(
        p50_ms=round(float(np.percentile(ms, 50)), 4),
        p99_ms=round(float(np.percentile(ms, 99)), 4),
        throughput_ips=round(runs * batch_size / elapsed, 1),
        batch_size=batch_size,
        host=Host(cpu=cpu_name(), gpu=None, provider="CPUExecutionProvider", intra_op_threads=threads),
        date=time.strftime("%Y-%m-%d", time.gmtime()),  # type: ignore[arg-type]
    )
