"""Static INT8 variants of registered models: `python -m export quantize --model NAME`.

ONNX Runtime's static quantisation in the QDQ format, weights per output channel, activation ranges
calibrated (MinMax) on training images -- Fashion-MNIST's train split, or a directory of images for an
ImageNet model -- never on the images the variant is then evaluated on. Dynamic quantisation is not
offered: for convnets it quantises the activations on every call and is slower than FP32 on the CPU.

The variant is its own registry entry (`NAME-int8`) with its own measured figures: accuracy on all
10,000 Fashion-MNIST test images (none for an ImageNet model, whose agreement with the FP32 model on a
directory of photos is recorded as `parity`, not as accuracy), size, host latency and the provenance.
Needs ONNX Runtime and numpy, not PyTorch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from export.fashion.data import load_split, to_input
from service.core.registry import (
    Artifact,
    ModelEntry,
    Parity,
    Provenance,
    Quantization,
    Registry,
    sha256_file,
)
from service.images import preprocess

SUFFIX = "-int8"
CALIBRATION_SAMPLES = 1000
CALIBRATION_BATCH = 100
CALIBRATION_SEED = 0
METHOD = "static QDQ (ONNX Runtime), S8S8, per-channel weights, MinMax calibration"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_MAX_PIXELS = 100_000_000
_EVAL_BATCH = 500


@dataclass(frozen=True)
class Images:
    """Preprocessed images (N x C x H x W float32), their labels where known, and what they are."""

    tensors: np.ndarray
    labels: np.ndarray | None
    description: str


class _Batches(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
    """Feeds the calibrator one batch of preprocessed images at a time."""

    def __init__(self, input_name: str, tensors: np.ndarray) -> None:
        self._input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(
            tensors[i : i + CALIBRATION_BATCH] for i in range(0, len(tensors), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}


def variant_name(name: str) -> str:
    return f"{name}{SUFFIX}"


def fashion_images(entry: ModelEntry, split: str, data_dir: Path | None, samples: int | None) -> Images:
    """A Fashion-MNIST split through the entry's normalisation; `samples` draws a seeded subset."""
    data = load_split(split, data_dir)
    images, labels = data.images, data.labels
    if samples is not None and samples < len(labels):
        pick = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(labels), samples, replace=False))
        images, labels = images[pick], labels[pick]
    tensors = to_input(images, entry.preprocessing.mean[0], entry.preprocessing.std[0])
    return Images(tensors, labels, f"fashion-mnist {split}")


def directory_images(entry: ModelEntry, directory: Path, limit: int | None) -> Images:
    """The image files of a directory (sorted by name), through the service's own preprocessing."""
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    tensors = [
        preprocess.to_tensor(preprocess.decode(f.read_bytes(), max_pixels=_MAX_PIXELS), entry.preprocessing)
        for f in files
    ]
    return Images(np.stack(tensors), None, f"{len(files)} images of {directory.name}/")


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(path: Path, tensors: np.ndarray) -> np.ndarray:
    sess = _session(path)
    name, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    parts = [
        sess.run([out], {name: tensors[i : i + _EVAL_BATCH]})[0] for i in range(0, len(tensors), _EVAL_BATCH)
    ]
    return np.concatenate(parts).astype(np.float64)


def quantize_file(source: Path, target: Path, calibration: np.ndarray) -> None:
    """Write the static QDQ INT8 model of `source`, its activation ranges calibrated on `calibration`."""
    input_name = _session(source).get_inputs()[0].name
    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(source),
        str(target),
        _Batches(input_name, calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )


@dataclass(frozen=True)
class Evaluation:
    top1: float | None
    top5: float | None
    samples: int
    parity: Parity


def compare(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray | None) -> Evaluation:
    """The variant's accuracy (where labels are known) and its agreement with the FP32 logits."""
    parity = Parity(
        samples=len(fp32),
        max_abs_diff=round(float(np.abs(fp32 - int8).max()), 6),
        logit_scale=round(float(np.abs(fp32).max()), 6),
        top1_agreement=round(float((fp32.argmax(1) == int8.argmax(1)).mean()), 4),
    )
    if labels is None:
        return Evaluation(None, None, len(fp32), parity)
    best5 = np.argsort(-int8, axis=1)[:, :5]
    top1 = float((best5[:, 0] == labels).mean())
    top5 = float((best5 == labels[:, None]).any(axis=1).mean())
    return Evaluation(round(top1, 4), round(top5, 4), len(fp32), parity)


def _libraries() -> dict[str, str]:
    import platform

    versions = {"python": platform.python_version()}
    for name in ("onnx", "onnxruntime", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def variant_entry(
    source: ModelEntry,
    target: Path,
    artifact_path: str,
    evaluation: Evaluation,
    calibration: Images,
    agreement: str,
) -> ModelEntry:
    """The variant's registry entry: the source's description, its own measured figures."""
    today = dt.datetime.now(dt.UTC).date()
    size = target.stat().st_size
    labelled = evaluation.top1 is not None
    metrics = source.metrics.model_copy(
        update={
            "size_mb": round(size / 1e6, 3),
            "top1": evaluation.top1,
            "top5": evaluation.top5,
            "accuracy_source": "measured" if labelled else None,
            "accuracy_split": source.metrics.accuracy_split if labelled else None,
            "accuracy_samples": evaluation.samples if labelled else None,
            "accuracy_date": today if labelled else None,
        }
    )
    opset = max(
        (o.version for o in onnx.load(str(target)).opset_import if o.domain in ("", "ai.onnx")), default=0
    )
    recipe = source.provenance.recipe if source.provenance else None
    return source.model_copy(
        update={
            "name": variant_name(source.name),
            "architecture": f"{source.architecture}; INT8",
            "artifact": Artifact(path=artifact_path, bytes=size, sha256=sha256_file(target)),
            "weights": source.weights.model_copy(
                update={
                    "source": f"{source.weights.source}; INT8: python -m export quantize --model {source.name}"
                }
            ),
            "metrics": metrics,
            "parity": evaluation.parity,
            "latency": None,  # measured by the caller, with the service's loader
            "provenance": Provenance(exported=today, opset=opset, libraries=_libraries(), recipe=recipe),
            "quantization": Quantization(
                precision="int8",
                method=METHOD,
                quantized_from=source.name,
                source_sha256=source.artifact.sha256 or "",
                calibration_data=calibration.description,
                calibration_samples=len(calibration.tensors),
                agreement_data=agreement,
            ),
        }
    )


def artifact_path_of(source: ModelEntry) -> str:
    path = Path(source.artifact.path)
    return str(path.with_name(f"{path.stem}{SUFFIX}{path.suffix}"))


def quantize_entry(
    registry: Registry,
    name: str,
    *,
    models_dir: Path,
    data_dir: Path | None = None,
    calibration_dir: Path | None = None,
    agreement_dir: Path | None = None,
    calibration_samples: int = CALIBRATION_SAMPLES,
    test_samples: int | None = None,
) -> ModelEntry:
    """Quantize one FP32 registry entry, evaluate the variant and return its entry (latency not yet
    measured). Fashion-MNIST: calibrated on the train split, evaluated on the test split (all of it
    unless `test_samples`). Otherwise: calibrated on `calibration_dir`, agreement on `agreement_dir`."""
    source = registry.get(name)
    if source.quantization is not None:
        raise ValueError(f"{name} is already a quantized variant (of {source.quantization.quantized_from})")
    if not source.built:
        raise ValueError(f"{name} is not built: there is no artifact to quantize")
    if source.input.dtype != "float32":
        raise ValueError(f"{name} is {source.input.dtype}: quantize its float32 export")
    source_path = models_dir / source.artifact.path
    if sha256_file(source_path) != source.artifact.sha256:
        raise ValueError(f"{source_path.name}: its sha256 does not match the registry")
    if source.dataset == "fashion-mnist":
        calibration = fashion_images(source, "train", data_dir, calibration_samples)
        evaluation = fashion_images(source, "test", data_dir, test_samples)
    else:
        if calibration_dir is None or agreement_dir is None:
            raise ValueError(
                f"{name} is a {source.dataset} model: pass --calibration-images DIR (training-like photos) "
                "and --agreement-images DIR (other photos, where the variant is compared with FP32)"
            )
        if calibration_dir.resolve() == agreement_dir.resolve():
            raise ValueError("calibration and agreement images must be different directories")
        calibration = directory_images(source, calibration_dir, calibration_samples)
        evaluation = directory_images(source, agreement_dir, test_samples)
    artifact_path = artifact_path_of(source)
    target = models_dir / artifact_path
    quantize_file(source_path, target, calibration.tensors)
    result = compare(
        logits(source_path, evaluation.tensors), logits(target, evaluation.tensors), evaluation.labels
    )
    return variant_entry(source, target, artifact_path, result, calibration, evaluation.description)


def measure_latency(entry: ModelEntry, models_dir: Path, *, seconds: float) -> ModelEntry:
    """The variant's host latency, measured as `python -m export calibrate` does (the service's
    loader, ONNX Runtime on the CPU, one intra-op thread, batch 1 and 32)."""
    from export.calibrate import calibrate_entry
    from service.core.settings import Settings

    settings = Settings(models_dir=models_dir, intra_op_threads=1, providers="cpu")
    outcome = calibrate_entry(entry, models_dir, settings, seconds=seconds, batch_size=32)
    if outcome.latency is None:
        raise ValueError(f"{entry.name}: the service cannot load the variant: {outcome.reason}")
    return entry.model_copy(update={"latency": outcome.latency})


def default_names(registry: Registry) -> list[str]:
    """Every built float32 Fashion-MNIST model that is not itself a variant."""
    return [
        m.name
        for m in registry.models
        if m.dataset == "fashion-mnist" and m.built and m.quantization is None and m.input.dtype == "float32"
    ]


def describe(variant: ModelEntry, fp32: ModelEntry) -> str:
    """One line: the variant against its FP32 model, both latencies measured in the same run."""
    accuracy = (
        f"top-1 {variant.metrics.top1:.4f} (FP32 {fp32.metrics.top1})"
        if variant.metrics.top1 is not None
        else "no accuracy (ImageNet: agreement only)"
    )
    agreement = f"top-1 agreement {variant.parity.top1_agreement:.4f}" if variant.parity else "-"
    size = f"{variant.metrics.size_mb} MB (FP32 {fp32.metrics.size_mb})"

    def lat(e: ModelEntry) -> str:
        return f"p50 {e.latency.p50_ms} ms, {e.latency.throughput_ips} img/s" if e.latency else "-"

    return f"{variant.name}: {accuracy}, {agreement}, {size}, INT8 {lat(variant)} | FP32 {lat(fp32)}"
