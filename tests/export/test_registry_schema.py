"""registry.yaml against the schema: every entry's fields permitted and present, all violations at once."""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from service.core.registry import (
    ModelEntry,
    Registry,
    RegistryError,
    full_decoding,
    load_registry,
    parse_registry,
)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `Parity | None`, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def field_violations(model: type[BaseModel], data: Any, where: str) -> list[str]:
    """Unknown and missing fields of `data` against `model`, recursively through nested models."""
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping, got {type(data).__name__}"]
    permitted = set(model.model_fields)
    mandatory = {name for name, f in model.model_fields.items() if f.is_required()}
    problems = [f"{where}.{key}: not a permitted field" for key in sorted(set(data) - permitted)]
    problems += [f"{where}.{key}: mandatory field missing" for key in sorted(mandatory - set(data))]
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None and data.get(name) is not None:
            problems += field_violations(nested, data[name], f"{where}.{name}")
    return problems


def test_every_entry_has_exactly_the_permitted_and_mandatory_fields(registry_path: Path) -> None:
    raw = yaml.safe_load(registry_path.read_text(encoding="utf-8"))
    problems = field_violations(
        Registry, {k: v for k, v in raw.items() if k != "models"} | {"models": []}, "registry"
    )
    for i, entry in enumerate(raw.get("models") or []):
        name = entry.get("name", f"#{i}") if isinstance(entry, dict) else f"#{i}"
        problems += field_violations(ModelEntry, entry, f"model {name!r}")
    try:
        parse_registry(raw)
    except RegistryError as exc:
        problems.append(str(exc))
    assert not problems, "registry.yaml violates the schema:\n" + "\n".join(problems)


def test_the_fashion_zoo_is_registered_with_measured_figures(registry_path: Path) -> None:
    registry = load_registry(registry_path)
    fashion = [m for m in registry.models if m.dataset == "fashion-mnist"]
    assert {m.name for m in fashion} >= {
        "fmnist-lenet5", "fmnist-alexnet", "fmnist-vgg16", "fmnist-vgg19", "fmnist-googlenet",
        "fmnist-resnet-v1", "fmnist-resnet-v2", "fmnist-plain20", "fmnist-resnet20",
    }  # fmt: skip
    for m in fashion:
        assert m.metrics.accuracy_source == "measured" and m.metrics.accuracy_samples == 10_000, m.name
        assert m.weights.kind == "trained" and m.provenance is not None and m.provenance.recipe is not None
    best = max((m for m in fashion if m.quantization is None), key=lambda m: m.metrics.top1 or 0.0)
    assert best.name == "fmnist-vgg16"
    assert len(registry.label_sets["fashion-mnist"]) == 10


def test_the_default_is_the_bundled_photo_model(registry_path: Path) -> None:
    # A request naming no model is most likely a photo: the default is a pretrained ImageNet model.
    registry = load_registry(registry_path)
    default = registry.get(registry.default)
    assert default.name == "efficientnet_lite0"
    assert default.dataset == "imagenet-1k" and default.weights.kind == "pretrained" and default.built
    assert default.metrics.accuracy_source == "published" and default.metrics.top1 == 0.751


def _committed(registry_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(registry_path.read_text(encoding="utf-8"))
    return loaded


def test_an_unknown_field_fails_naming_the_entry(registry_path: Path) -> None:
    raw = copy.deepcopy(_committed(registry_path))
    name = raw["models"][0]["name"]
    raw["models"][0]["metrics"]["accuracy_guess"] = 0.99
    with pytest.raises(RegistryError, match=rf"model '{name}': metrics\.accuracy_guess"):
        parse_registry(raw)


def test_a_missing_field_fails_naming_the_entry(registry_path: Path) -> None:
    raw = copy.deepcopy(_committed(registry_path))
    name = raw["models"][-1]["name"]
    del raw["models"][-1]["artifact"]["sha256"]
    with pytest.raises(RegistryError, match=rf"model '{name}': artifact\.sha256"):
        parse_registry(raw)


def test_every_entry_says_how_uploads_are_decoded(registry_path: Path) -> None:
    """`reduce_at_decode` has a default for older registries, but the committed one writes it out."""
    raw = _committed(registry_path)
    unsaid = [m["name"] for m in raw["models"] if "reduce_at_decode" not in m["preprocessing"]]
    assert not unsaid


def test_an_entry_without_reduce_at_decode_reduces_as_the_service_always_did(registry_path: Path) -> None:
    raw = copy.deepcopy(_committed(registry_path))
    del raw["models"][0]["preprocessing"]["reduce_at_decode"]
    raw["models"][1]["preprocessing"]["reduce_at_decode"] = False
    registry = parse_registry(raw)
    assert registry.models[0].preprocessing.reduce_at_decode is True
    assert registry.models[1].preprocessing.reduce_at_decode is False
    raw["models"][1]["preprocessing"]["reduce_at_decode"] = "sometimes"
    with pytest.raises(RegistryError, match=r"preprocessing\.reduce_at_decode"):
        parse_registry(raw)


def test_full_decoding_turns_reduction_off_in_every_entry(registry_path: Path) -> None:
    registry = load_registry(registry_path)
    full = full_decoding(registry)
    assert [m.preprocessing.reduce_at_decode for m in full.models] == [False] * len(registry.models)
    unchanged = [
        m.model_copy(update={"preprocessing": registry.get(m.name).preprocessing}) for m in full.models
    ]
    assert unchanged == registry.models  # nothing else changed


def test_the_schema_walker_reports_every_violation() -> None:
    problems = field_violations(ModelEntry, {"name": "x", "colour": "red"}, "model 'x'")
    assert "model 'x'.colour: not a permitted field" in problems
    assert "model 'x'.metrics: mandatory field missing" in problems
    assert len([p for p in problems if "mandatory" in p]) > 5
