"""The Fashion-MNIST zoo: what each model is, how it is trained, and how its registry entry is built."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from export.build import FASHION_DATASET, REDUCE_AT_DECODE, library_versions, today
from export.fashion.data import LABELS, Split, load_split, normalisation, to_input
from export.fashion.nets import build_net
from export.fashion.train import TrainConfig, train
from export.graph import gmacs, weight_layer_depth
from export.onnx_export import check_parity, evaluate_onnx, export_onnx, measure_latency
from service.core.registry import (
    Artifact,
    InputSpec,
    Metrics,
    ModelEntry,
    Preprocessing,
    Provenance,
    Weights,
    sha256_file,
)

OPSET = 18
PARITY_SAMPLES = 64
LENET = "LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document recognition. Proc. IEEE 86(11), 1998"
ALEXNET = "Krizhevsky, Sutskever, Hinton. ImageNet classification with deep convolutional neural networks. NIPS 2012"
VGG = "Simonyan, Zisserman. Very deep convolutional networks for large-scale image recognition. ICLR 2015, arXiv:1409.1556"
GOOGLENET = "Szegedy et al. Going deeper with convolutions. CVPR 2015, arXiv:1409.4842"
RESNET = "He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016, arXiv:1512.03385"
RESNET_V2 = "He, Zhang, Ren, Sun. Identity mappings in deep residual networks. ECCV 2016, arXiv:1603.05027"


@dataclass(frozen=True)
class FashionSpec:
    name: str
    architecture: str
    paper: str
    config: TrainConfig


def _sgd(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, optimizer="sgd", lr=0.1, weight_decay=5e-4)


def _adamw(epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, optimizer="adamw", lr=lr, weight_decay=0.01)


SPECS: tuple[FashionSpec, ...] = (
    FashionSpec("fmnist-lenet5", "LeNet-5 (ReLU, max-pooling)", LENET, _adamw(10, 3e-3)),
    FashionSpec("fmnist-alexnet", "AlexNet, scaled for 28x28 (5 conv + 3 FC, BN for LRN)", ALEXNET, _sgd(5)),
    FashionSpec("fmnist-vgg16", "VGG16, configuration D, widths / 8, BN", VGG, _sgd(30)),
    FashionSpec("fmnist-vgg19", "VGG19, configuration E, widths / 8, BN", VGG, _sgd(3)),
    FashionSpec("fmnist-googlenet", "GoogLeNet (inception v1 modules), channels / 8, BN", GOOGLENET, _sgd(2)),
    FashionSpec(
        "fmnist-resnet-v1", "ResNet v1: the seed's resnet_v1 (two res_block_v1)", RESNET, _adamw(2, 2e-3)
    ),
    FashionSpec(
        "fmnist-resnet-v2", "ResNet v2: the seed's resnet_v2 (two res_block_v2)", RESNET_V2, _adamw(2, 2e-3)
    ),
    FashionSpec(
        "fmnist-plain20", "Plain-20: 19 conv + FC, no shortcuts (He et al. 2016, 4.2)", RESNET, _sgd(2)
    ),
    FashionSpec("fmnist-resnet20", "ResNet-20: plain-20 with identity shortcuts (option A)", RESNET, _sgd(2)),
)
NAMES = tuple(s.name for s in SPECS)


def spec_of(name: str) -> FashionSpec:
    for spec in SPECS:
        if spec.name == name:
            return spec
    raise ValueError(f"Unknown model {name}")


def preprocessing(mean: float, std: float) -> Preprocessing:
    return Preprocessing(
        reduce_at_decode=REDUCE_AT_DECODE,
        color_mode="L",
        resize=28,
        crop=28,
        interpolation="bilinear",
        mean=[mean],
        std=[std],
    )


def onnx_metadata(name: str, version: str, pre: Preprocessing) -> dict[str, str]:
    """What the artifact says about itself: its name, labels and preprocessing, as JSON strings."""
    return {
        "convzoo.name": name,
        "convzoo.version": version,
        "convzoo.dataset": FASHION_DATASET,
        "convzoo.labels": json.dumps(LABELS),
        "convzoo.preprocessing": pre.model_dump_json(),
        "convzoo.output": "logits (apply softmax for probabilities)",
    }


@dataclass(frozen=True)
class Overrides:
    """Shorter runs through the same code path (quick checks, tests); None keeps the spec's value."""

    epochs: int | None = None
    train_samples: int | None = None


def _config(spec: FashionSpec, overrides: Overrides) -> TrainConfig:
    cfg = spec.config
    if overrides.epochs is not None:
        cfg = replace(cfg, epochs=overrides.epochs)
    if overrides.train_samples is not None:
        cfg = replace(cfg, train_samples=overrides.train_samples)
    return cfg


def build_one(
    spec: FashionSpec,
    *,
    train_split: Split,
    test_split: Split,
    out_dir: Path,
    overrides: Overrides = Overrides(),
    progress: bool = True,
) -> ModelEntry:
    """Train, export, check and measure one model; returns its registry entry."""
    mean, std = normalisation(train_split)
    pre = preprocessing(mean, std)
    version = today().isoformat()
    torch.manual_seed(spec.config.seed)
    module = build_net(spec.name)
    recipe = train(
        module, train_split, _config(spec, overrides), mean=mean, std=std, desc=spec.name, progress=progress
    )
    path = out_dir / f"{spec.name}.onnx"
    test_x = to_input(test_split.images, mean, std)
    proto = export_onnx(
        module,
        sample=torch.from_numpy(test_x[:2]),
        path=path,
        metadata=onnx_metadata(spec.name, version, pre),
        opset=OPSET,
    )
    parity = check_parity(module, path, torch.from_numpy(test_x[:PARITY_SAMPLES]))
    top1, top5 = evaluate_onnx(path, test_x, test_split.labels)
    return ModelEntry(
        name=spec.name,
        version=version,
        dataset=FASHION_DATASET,
        architecture=spec.architecture,
        paper=spec.paper,
        num_classes=len(LABELS),
        labels=FASHION_DATASET,
        input=InputSpec(name="input", shape=["batch", 1, 28, 28], dtype="float32", channels=1),
        preprocessing=pre,
        artifact=Artifact(path=path.name, bytes=path.stat().st_size, sha256=sha256_file(path)),
        weights=Weights(
            kind="trained", source=f"trained here: python -m export build --zoo fashion (seed {recipe.seed})"
        ),
        metrics=_metrics(module, proto, path, top1, top5, len(test_split)),
        parity=parity,
        latency=measure_latency(path, test_x[:1]),
        provenance=Provenance(exported=today(), opset=OPSET, libraries=library_versions(), recipe=recipe),
    )


def _metrics(
    module: torch.nn.Module, proto: onnx.ModelProto, path: Path, top1: float, top5: float, n: int
) -> Metrics:
    return Metrics(
        params=sum(p.numel() for p in module.parameters()),
        depth=weight_layer_depth(proto),
        gflops=round(gmacs(proto, (1, 28, 28)), 6),
        size_mb=round(path.stat().st_size / 1e6, 3),
        top1=round(top1, 4),
        top5=round(top5, 4),
        accuracy_source="measured",
        accuracy_split="test",
        accuracy_samples=n,
        accuracy_date=today(),
    )


def build(
    names: list[str],
    *,
    out_dir: Path,
    data_dir: Path | None = None,
    overrides: Overrides = Overrides(),
    progress: bool = True,
    on_entry: Callable[[ModelEntry], None] | None = None,
) -> list[ModelEntry]:
    """Build the named models (all nine when `names` is empty), calling `on_entry` after each."""
    specs = [spec_of(n) for n in names] if names else list(SPECS)
    train_split, test_split = load_split("train", data_dir), load_split("test", data_dir)
    entries: list[ModelEntry] = []
    for spec in tqdm(specs, desc="fashion zoo", unit="model", disable=not progress or len(specs) == 1):
        entry = build_one(
            spec,
            train_split=train_split,
            test_split=test_split,
            out_dir=out_dir,
            overrides=overrides,
            progress=progress,
        )
        entries.append(entry)
        if on_entry is not None:
            on_entry(entry)
    return entries


def evaluate(
    name: str, *, models_dir: Path, entry: ModelEntry, data_dir: Path | None = None
) -> tuple[float, float]:
    """Re-measure a built Fashion-MNIST artifact on the 10,000 test images through ONNX Runtime."""
    test = load_split("test", data_dir)
    x = to_input(test.images, entry.preprocessing.mean[0], entry.preprocessing.std[0])
    return evaluate_onnx(models_dir / entry.artifact.path, x, test.labels)
