"""The ImageNet zoo: catalog entries from torchvision's meta, weight sourcing, real exports run by ONNX Runtime."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torchvision.models import get_model, get_model_weights

from export import efficientnet_lite, imagenet
from export.build import merge_into_registry
from export.fashion import zoo as fashion_zoo
from export.weights import WeightsUnavailable, download
from service.core.registry import ModelEntry, Registry, load_registry
from service.images.preprocess import to_tensor

# Minutes of exports and fuzzing: `make test-long` (CI runs it; docs in the README).
pytestmark = pytest.mark.slow

CATALOG_SAMPLE = ["alexnet", "resnet18"]


@pytest.fixture(autouse=True)
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No torch hub cache: every test starts without downloaded weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def catalog_sample() -> list[ModelEntry]:
    return imagenet.catalog(CATALOG_SAMPLE)


def test_catalog_entries_carry_published_figures(catalog_sample: list[ModelEntry]) -> None:
    registry = Registry(
        schema_version=1, default="alexnet", label_sets=imagenet.label_sets(), models=catalog_sample
    )
    for entry in registry.models:
        meta = get_model_weights(entry.name).DEFAULT.meta
        ModelEntry.model_validate(entry.model_dump())
        assert entry.metrics.accuracy_source == "published"
        assert entry.metrics.top1 == pytest.approx(meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100)
        assert entry.metrics.top5 == pytest.approx(meta["_metrics"]["ImageNet-1K"]["acc@5"] / 100)
        assert (entry.metrics.accuracy_split, entry.metrics.accuracy_samples) == ("val", 50_000)
        assert entry.metrics.params == meta["num_params"]
        assert entry.metrics.gflops == pytest.approx(meta["_ops"], rel=0.01)
        assert entry.weights.kind == "pretrained" and "IMAGENET1K" in entry.weights.source
        assert entry.artifact.path == f"imagenet/{entry.name}.onnx" and not entry.built
        assert registry.labels_of(entry.name) == meta["categories"]
    depths = {e.name: e.metrics.depth for e in catalog_sample}
    assert depths == {"alexnet": 8, "resnet18": 18}


def test_preprocessing_follows_the_weights() -> None:
    resnet50 = imagenet.preprocessing(imagenet.default_weights("resnet50"))
    inception = imagenet.preprocessing(imagenet.default_weights("inception_v3"))
    efficientnet = imagenet.preprocessing(imagenet.default_weights("efficientnet_b3"))
    assert (resnet50.resize, resnet50.crop, resnet50.interpolation) == (232, 224, "bilinear")
    assert (inception.resize, inception.crop) == (342, 299)
    assert (efficientnet.resize, efficientnet.crop, efficientnet.interpolation) == (320, 300, "bicubic")


def test_committed_catalog_matches_the_graphs(
    committed_registry: Registry, catalog_sample: list[ModelEntry]
) -> None:
    recorded = {m.name: m for m in committed_registry.models if m.dataset == imagenet.DATASET}
    assert set(imagenet.NAMES) <= set(recorded), "registry.yaml lacks catalog entries"
    for fresh in catalog_sample:
        entry = recorded[fresh.name]
        assert (entry.metrics.depth, entry.metrics.gflops) == (fresh.metrics.depth, fresh.metrics.gflops)
        if entry.weights.kind != "random":
            assert entry.metrics.top1 is not None


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown model resnet9"):
        imagenet.build(["resnet9"], out_dir=tmp_path, random_weights=True)


def test_missing_weights_are_refused_with_the_ways_to_supply_them(tmp_path: Path, empty_hub: Path) -> None:
    with pytest.raises(WeightsUnavailable) as refused:
        imagenet.build(
            ["resnet18"], out_dir=tmp_path, weights_file=None, random_weights=False, download=False
        )
    message = str(refused.value)
    for way in ("download", str(empty_hub), "resnet18-f37072fd.pth", "--weights-file", "--random-weights"):
        assert way in message
    assert not list(tmp_path.glob("*.onnx"))


def test_an_unreachable_download_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(WeightsUnavailable, match=r"download of http://127\.0\.0\.1:9/"):
        download(
            "http://127.0.0.1:9/resnet18-f37072fd.pth",
            tmp_path / "x.pth",
            expected_prefix="f37072fd",
            timeout=5,
        )
    assert time.monotonic() - started < 5
    assert not list(tmp_path.iterdir())


def _run(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"input": batch})[0]
    return out


def test_random_weights_build_a_working_artifact_without_accuracy(tmp_path: Path) -> None:
    entry, half = imagenet.build(
        ["resnet18"], out_dir=tmp_path, weights_file=None, random_weights=True, fp16=True
    )
    path = tmp_path / "resnet18.onnx"
    assert entry.weights.kind == "random" and entry.version == "random-seed0"
    assert (entry.metrics.top1, entry.metrics.top5, entry.metrics.accuracy_source) == (None, None, None)
    assert entry.artifact.bytes == path.stat().st_size and entry.built
    assert (entry.metrics.depth, entry.metrics.params) == (18, 11_689_512)
    assert entry.parity is not None and entry.parity.top1_agreement == 1.0
    assert entry.parity.max_abs_diff <= 1e-4 * entry.parity.logit_scale
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["convzoo.preprocessing"])["resize"] == 256
    assert len(json.loads(meta["convzoo.labels"])) == 1000
    logits = _run(path, imagenet.parity_batch(entry.preprocessing, 3).numpy())
    assert logits.shape == (3, 1000) and np.isfinite(logits).all()

    # the float16 variant: half the bytes, float32 at the edges, parity against the float32 PyTorch model
    assert half.name == "resnet18-fp16" and half.artifact.path == "imagenet/resnet18-fp16.onnx"
    assert half.weights.kind == "random" and half.metrics.top1 is None
    assert half.artifact.bytes is not None and half.artifact.bytes < 0.55 * entry.artifact.bytes
    assert half.metrics.depth == 18 and half.input.dtype == "float32"
    assert half.parity is not None and half.parity.top1_agreement >= 0.75
    assert half.parity.max_abs_diff <= 1e-2 * half.parity.logit_scale
    half_logits = _run(tmp_path / "resnet18-fp16.onnx", imagenet.parity_batch(entry.preprocessing, 3).numpy())
    assert half_logits.dtype == np.float32 and half_logits.shape == (3, 1000)


class NotATensor:
    pass


def test_a_checkpoint_with_other_objects_is_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {"fc.bias": torch.zeros(1000)}, "extra": NotATensor()}, path)
    with pytest.raises(WeightsUnavailable, match="cannot read checkpoint"):
        imagenet.build(["resnet18"], out_dir=tmp_path, weights_file=path)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(get_model("resnet34").state_dict(), path)
    with pytest.raises(WeightsUnavailable, match="does not fit torchvision's resnet18"):
        imagenet.build(["resnet18"], out_dir=tmp_path, weights_file=path)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelEntry, torch.nn.Module, Path]:
    """resnet18 built from a local state dict (random weights saved to a file, as a user's checkpoint)."""
    root = tmp_path_factory.mktemp("local")
    torch.manual_seed(7)
    module = get_model("resnet18").eval()
    weights_file = root / "my-resnet18.pth"
    torch.save(module.state_dict(), weights_file)
    [entry] = imagenet.build(["resnet18"], out_dir=root / "models" / "imagenet", weights_file=weights_file)
    return entry, module, root


def test_weights_file_is_the_source(local_build: tuple[ModelEntry, torch.nn.Module, Path]) -> None:
    entry, module, root = local_build
    assert entry.weights.kind == "pretrained" and "my-resnet18.pth" in entry.weights.source
    assert entry.metrics.top1 is None, "not torchvision's checkpoint: the published accuracy does not apply"
    batch = imagenet.parity_batch(entry.preprocessing, 2)
    with torch.no_grad():
        expected = module(batch).numpy()
    got = _run(root / "models" / entry.artifact.path, batch.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4 * float(np.abs(expected).max()))


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    return Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC)


def test_evaluate_measures_on_an_image_folder(local_build: tuple[ModelEntry, torch.nn.Module, Path]) -> None:
    entry, _, root = local_build
    registry = root / "registry.yaml"
    merge_into_registry(registry, [entry], imagenet.label_sets())
    session = ort.InferenceSession(
        str(root / "models" / entry.artifact.path), providers=["CPUExecutionProvider"]
    )
    data = root / "val"
    wnids = [f"n{i:08d}" for i in range(1000)]  # sorted folder order gives the class index
    for wnid in wnids:
        (data / wnid).mkdir(parents=True)
    for seed in range(6):
        image = _image(seed)
        predicted = int(session.run(None, {"input": to_tensor(image, entry.preprocessing)[None]})[0].argmax())
        label = predicted if seed < 4 else (predicted + 1) % 1000  # four right, two wrong
        image.save(data / wnids[label] / f"ILSVRC2012_val_{seed:08d}.png")  # lossless: same pixels as scored

    measured = imagenet.evaluate("resnet18", data, registry_path=registry, models_dir=root / "models")
    assert measured.metrics.accuracy_source == "measured"
    assert measured.metrics.accuracy_samples == 6 and measured.metrics.accuracy_split == "val"
    assert measured.metrics.top1 == round(4 / 6, 5)


def test_evaluate_refuses_a_wrong_layout(local_build: tuple[ModelEntry, torch.nn.Module, Path]) -> None:
    entry, _, root = local_build
    registry = root / "registry.yaml"
    merge_into_registry(registry, [entry], imagenet.label_sets())
    flat = root / "flat"
    flat.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="0 class folders, expected 1000"):
        imagenet.evaluate("resnet18", flat, registry_path=registry, models_dir=root / "models")
    assert load_registry(registry).get("resnet18").metrics.accuracy_source is None


def test_every_entry_the_export_stage_makes_says_how_uploads_are_decoded() -> None:
    """`reduce_at_decode` is written out, not left to its default (docs/preprocessing.md)."""
    made = [
        imagenet.preprocessing(imagenet.default_weights("resnet50")),
        imagenet.lite_preprocessing(efficientnet_lite.variant("efficientnet_lite0")),
        fashion_zoo.preprocessing(0.286, 0.353),
    ]
    for pre in made:
        assert "reduce_at_decode" in pre.model_fields_set and pre.reduce_at_decode is True
        assert "reduce_at_decode" in pre.model_dump(exclude_unset=True)
