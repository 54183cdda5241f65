"""Export to ONNX and parity with PyTorch through ONNX Runtime, on several of the zoo's architectures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.fashion.nets import build_net
from export.onnx_export import check_parity, export_onnx
from service.core.registry import sha256_file

# Minutes of exports and fuzzing: `make test-long` (CI runs it; docs in the README).
pytestmark = pytest.mark.slow

ARCHITECTURES = [
    "fmnist-lenet5", "fmnist-alexnet", "fmnist-vgg16", "fmnist-googlenet",
    "fmnist-resnet-v1", "fmnist-resnet-v2", "fmnist-resnet20",
]  # fmt: skip


def calibrated(name: str) -> torch.nn.Module:
    """An untrained network whose batch-norm statistics are realistic, not the defaults (0 and 1)."""
    torch.manual_seed(0)
    module = build_net(name).train()
    with torch.no_grad():
        for _ in range(4):
            module(torch.randn(32, 1, 28, 28) * 1.3 + 0.2)
    return module.eval()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_parity_with_pytorch(name: str, tmp_path: Path) -> None:
    module = calibrated(name)
    path = tmp_path / f"{name}.onnx"
    export_onnx(module, sample=torch.randn(2, 1, 28, 28), path=path, metadata={"convzoo.name": name})
    batch = torch.randn(48, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    parity = check_parity(module, path, batch)
    assert parity.samples == 48
    assert parity.top1_agreement == 1.0
    assert parity.max_abs_diff <= 1e-4 * parity.logit_scale, parity


def test_the_file_is_checked_self_contained_and_self_describing(tmp_path: Path) -> None:
    module = calibrated("fmnist-resnet-v2")
    path = tmp_path / "model.onnx"
    meta = {"convzoo.labels": json.dumps(["a", "b"]), "convzoo.preprocessing": json.dumps({"resize": 28})}
    export_onnx(module, sample=torch.randn(2, 1, 28, 28), path=path, metadata=meta)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no external data beside it
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {p.key: p.value for p in model.metadata_props} == meta
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):  # the batch axis really is dynamic
        (logits,) = session.run(None, {"input": np.zeros((n, 1, 28, 28), np.float32)})
        assert logits.shape == (n, 10)


def test_a_weightless_export_keeps_the_graph_without_the_weights(tmp_path: Path) -> None:
    module = calibrated("fmnist-lenet5")
    full = export_onnx(module, sample=torch.randn(2, 1, 28, 28), path=tmp_path / "w.onnx", metadata={})
    bare = export_onnx(
        module, sample=torch.randn(2, 1, 28, 28), path=tmp_path / "g.onnx", metadata={}, with_weights=False
    )
    assert len(full.graph.initializer) > 0 and len(bare.graph.initializer) == 0
    assert [n.op_type for n in bare.graph.node] == [n.op_type for n in full.graph.node]
    assert (tmp_path / "g.onnx").stat().st_size < (tmp_path / "w.onnx").stat().st_size / 10


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"convzoo" * 100_000)
    assert sha256_file(path) == hashlib.sha256(b"convzoo" * 100_000).hexdigest()
