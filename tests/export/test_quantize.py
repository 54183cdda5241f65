"""`python -m export quantize`: a static INT8 variant as its own registry entry, with its own measured figures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from export.fashion.data import load_split, to_input
from export.onnx_export import evaluate_onnx
from export.quantize import SUFFIX, quantize_entry
from service.core.registry import Quantization, Registry, load_registry, save_registry, sha256_file

REPO = Path(__file__).resolve().parents[2]
SMALL = "fmnist-lenet5"


@pytest.fixture
def lenet_zoo(tmp_path: Path, committed_registry: Registry, models_dir: Path) -> tuple[Path, Path]:
    """registry.yaml and models/ in tmp_path holding only the FP32 LeNet-5."""
    entry = committed_registry.get(SMALL)
    (tmp_path / "models").mkdir()
    shutil.copyfile(models_dir / entry.artifact.path, tmp_path / "models" / entry.artifact.path)
    save_registry(
        committed_registry.model_copy(update={"models": [entry], "default": SMALL}),
        tmp_path / "registry.yaml",
    )
    return tmp_path / "registry.yaml", tmp_path / "models"


def _quantize_cli(registry_path: Path, models: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # torch blocked: the command needs ONNX Runtime, not PyTorch
    code = "import sys; sys.modules['torch'] = None; import runpy; runpy.run_module('export', run_name='__main__')"
    args = ["quantize", "--registry", str(registry_path), "--out", str(models), "--seconds", "0.1", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_variant_is_its_own_measured_entry(lenet_zoo: tuple[Path, Path], fashion_dir: Path) -> None:
    registry_path, models = lenet_zoo
    done = _quantize_cli(registry_path, models, "--model", SMALL, "--calibration-samples", "200")
    assert done.returncode == 0, done.stderr
    registry = load_registry(registry_path)
    fp32, int8 = registry.get(SMALL), registry.get(SMALL + SUFFIX)
    assert registry.default == SMALL  # a variant is never made the default
    assert int8.name in done.stdout and "top-1 agreement" in done.stdout
    q = int8.quantization
    assert q is not None and q.precision == "int8" and q.quantized_from == SMALL
    assert q.source_sha256 == fp32.artifact.sha256
    assert (q.calibration_data, q.calibration_samples) == ("fashion-mnist train", 200)
    assert q.agreement_data == "fashion-mnist test"
    # the artifact is what the entry says, and a QDQ graph
    path = models / int8.artifact.path
    assert int8.artifact.sha256 == sha256_file(path) and int8.artifact.bytes == path.stat().st_size
    assert int8.metrics.size_mb is not None and int8.metrics.size_mb < (fp32.metrics.size_mb or 0)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # accuracy: all 10,000 test images, and the figure is reproducible from the artifact
    m = int8.metrics
    assert (m.accuracy_source, m.accuracy_split, m.accuracy_samples) == ("measured", "test", 10_000)
    test = load_split("test", fashion_dir)
    x = to_input(test.images, int8.preprocessing.mean[0], int8.preprocessing.std[0])
    top1, _ = evaluate_onnx(path, x, test.labels, batch_size=2000)
    assert m.top1 is not None and abs(top1 - m.top1) <= 1e-4
    assert abs(m.top1 - (fp32.metrics.top1 or 0)) < 0.02
    assert int8.parity is not None and int8.parity.samples == 10_000 and int8.parity.top1_agreement > 0.95
    assert int8.latency is not None and int8.latency.host.intra_op_threads == 1
    assert int8.provenance is not None and "onnxruntime" in int8.provenance.libraries
    # nothing of the FP32 entry changed
    assert fp32 == load_registry(registry_path).get(SMALL)


def test_a_variant_is_not_quantized_again_and_imagenet_needs_its_images(lenet_zoo: tuple[Path, Path]) -> None:
    registry_path, models = lenet_zoo
    registry = load_registry(registry_path)
    fp32 = registry.get(SMALL)
    marker = Quantization(
        precision="int8",
        method="static QDQ",
        quantized_from=SMALL,
        source_sha256=fp32.artifact.sha256 or "",
        calibration_data="fashion-mnist train",
        calibration_samples=1,
        agreement_data="fashion-mnist test",
    )
    int8 = fp32.model_copy(update={"name": SMALL + SUFFIX, "quantization": marker})
    with pytest.raises(ValueError, match="already a quantized variant"):
        quantize_entry(
            registry.model_copy(update={"models": [*registry.models, int8]}), int8.name, models_dir=models
        )
    photo = registry.get(SMALL).model_copy(update={"dataset": "imagenet-1k"})
    with pytest.raises(ValueError, match="--calibration-images"):
        quantize_entry(registry.model_copy(update={"models": [photo]}), SMALL, models_dir=models)


def test_unknown_model_fails_cleanly(lenet_zoo: tuple[Path, Path]) -> None:
    done = _quantize_cli(*lenet_zoo, "--model", "nope")
    assert done.returncode == 2 and "Unknown model nope" in done.stderr


def test_the_committed_variants_match_the_registry(committed_registry: Registry, models_dir: Path) -> None:
    fp32 = [m for m in committed_registry.models if m.dataset == "fashion-mnist" and m.quantization is None]
    total = 0
    for source in fp32:
        variant = committed_registry.get(source.name + SUFFIX)
        assert variant.quantization is not None and variant.quantization.quantized_from == source.name
        assert variant.quantization.source_sha256 == source.artifact.sha256, "re-quantize after a rebuild"
        assert "train" in variant.quantization.calibration_data
        path = models_dir / variant.artifact.path
        assert sha256_file(path) == variant.artifact.sha256
        assert variant.metrics.accuracy_samples == 10_000 and variant.parity is not None
        assert variant.parity.top1_agreement >= 0.95, variant.name
        total += path.stat().st_size
    assert total < 0.4 * sum((m.artifact.bytes or 0) for m in fp32)  # INT8: about a quarter of the bytes


def test_a_photo_model_is_calibrated_on_one_directory_and_compared_on_another(
    lenet_zoo: tuple[Path, Path], fashion_dir: Path, tmp_path: Path
) -> None:
    # An ImageNet-style entry: images come from directories through the service's preprocessing, and the
    # variant records its agreement with FP32, never an accuracy.
    from PIL import Image

    registry_path, models = lenet_zoo
    registry = load_registry(registry_path)
    photo = registry.get(SMALL).model_copy(update={"dataset": "photos"})
    images = load_split("train", fashion_dir).images
    calibration, agreement = tmp_path / "calibration", tmp_path / "agreement"
    for folder, start, count in ((calibration, 0, 40), (agreement, 40, 12)):
        folder.mkdir()
        for i in range(start, start + count):
            Image.fromarray(images[i]).save(folder / f"{i}.png")
    entry = quantize_entry(
        registry.model_copy(update={"models": [photo]}),
        SMALL,
        models_dir=models,
        calibration_dir=calibration,
        agreement_dir=agreement,
    )
    m, q = entry.metrics, entry.quantization
    assert m.top1 is None and m.top5 is None and m.accuracy_source is None and m.accuracy_samples is None
    assert q is not None and q.calibration_samples == 40 and q.calibration_data == "40 images of calibration/"
    assert q.agreement_data == "12 images of agreement/"
    assert entry.parity is not None and entry.parity.samples == 12 and entry.parity.top1_agreement >= 0.75
    with pytest.raises(ValueError, match="different directories"):
        quantize_entry(
            registry.model_copy(update={"models": [photo]}),
            SMALL,
            models_dir=models,
            calibration_dir=calibration,
            agreement_dir=calibration,
        )
