"""The model registry: one strict schema, shared by the export stage (writer) and the service (reader).

`registry.yaml` is trusted configuration, but it is still validated field by field at load time:
an unknown or missing field fails loudly and names the entry it belongs to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

WeightsKind = Literal["trained", "pretrained", "random"]
AccuracySource = Literal["measured", "published"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(Strict):
    name: str
    shape: list[int | str]  # NCHW, the batch axis named (dynamic), e.g. ["batch", 1, 28, 28]
    dtype: Literal["float32", "float16"]
    channels: Literal[1, 3]


class Preprocessing(Strict):
    """How an uploaded image becomes the model's input tensor, in this order (docs/preprocessing.md says
    it step by step, as a client reproduces it with Pillow and NumPy)."""

    # Published in /openapi.json too, for the clients that preprocess (a 12-megapixel JPEG decodes in a
    # fifth of the time reduced: docs/preprocessing.md, with its agreement with full decoding).
    reduce_at_decode: bool = Field(
        default=True,
        description=(
            "A large image is decoded at reduced size, before anything else. A JPEG (Pillow format JPEG "
            "or MPO) by its decoder's DCT scaling, Pillow's `Image.draft(mode, (resize, resize))`: scale 1/s, s the largest of 8, 4, 2 "
            "at most min(width, height) // resize, each side rounded up. An image of Pillow mode LA, La, "
            "RGBA, RGBa, I or F by `Image.reduce(n)`, n = min(width, height) // (3 * resize), where n >= 2. "
            "Other images, and every image when false, at full size. Absent from a registry entry: true."
        ),
    )
    color_mode: Literal["L", "RGB"]
    resize: int = Field(gt=0)  # shorter side resized to this many pixels
    crop: int = Field(gt=0)  # then a centre crop of crop x crop
    interpolation: Literal["nearest", "bilinear", "bicubic"]
    mean: list[float]  # per channel, on pixel values scaled to [0, 1]
    std: list[float]

    @model_validator(mode="after")
    def _per_channel(self) -> Preprocessing:
        channels = 1 if self.color_mode == "L" else 3
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} value(s) for colour mode {self.color_mode}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if self.crop > self.resize:
            raise ValueError("crop must not exceed resize")
        return self


class Artifact(Strict):
    path: str  # relative to the model directory
    bytes: int | None  # None while the artifact is not built
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")


class Weights(Strict):
    kind: WeightsKind
    source: str


class Metrics(Strict):
    params: int = Field(ge=0)
    depth: int = Field(ge=1)  # weight layers (Conv, Gemm, MatMul) on the longest path of the ONNX graph
    gflops: float = Field(ge=0)  # multiply-accumulates per image, in billions, as torchvision counts
    size_mb: float | None  # artifact size in MB (10^6 bytes); None while not built
    top1: float | None = Field(ge=0, le=1)
    top5: float | None = Field(ge=0, le=1)
    accuracy_source: AccuracySource | None
    accuracy_split: str | None  # e.g. "test" (Fashion-MNIST) or "val" (ImageNet-1k)
    accuracy_samples: int | None
    accuracy_date: dt.date | None

    @model_validator(mode="after")
    def _accuracy_consistent(self) -> Metrics:
        if (self.top1 is None) != (self.accuracy_source is None):
            raise ValueError("top1 and accuracy_source are given together or not at all")
        if self.top1 is not None and self.top5 is not None and self.top5 < self.top1:
            raise ValueError("top5 cannot be below top1")
        return self


class Host(Strict):
    cpu: str
    gpu: str | None
    provider: str
    intra_op_threads: int


class Latency(Strict):
    """Measured on a named host; never estimated."""

    p50_ms: float = Field(gt=0)  # batch 1
    p99_ms: float = Field(gt=0)
    throughput_ips: float = Field(gt=0)  # images per second at `batch_size`
    batch_size: int = Field(ge=1)
    host: Host
    date: dt.date


class Parity(Strict):
    """The exported ONNX file run by ONNX Runtime, against PyTorch, on one fixed batch."""

    samples: int
    max_abs_diff: float
    logit_scale: float  # max |logit| of the PyTorch output
    top1_agreement: float = Field(ge=0, le=1)


class Recipe(Strict):
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    augmentation: str
    seed: int
    train_samples: int
    wall_s: float


class Provenance(Strict):
    exported: dt.date
    opset: int
    libraries: dict[str, str]
    recipe: Recipe | None  # where trained here


class Batching(Strict):
    max_batch_size: int = Field(ge=1)
    max_queue_delay_us: int = Field(ge=0)


class Quantization(Strict):
    """A variant quantized from another registry entry by the export stage (`python -m export quantize`).

    Its `parity` then compares it with that entry's FP32 model on `agreement_data`, not with PyTorch."""

    precision: Literal["int8"]
    method: str  # e.g. "static QDQ, per-channel weights, MinMax calibration"
    quantized_from: str  # the registry name of the FP32 entry
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    calibration_data: str  # never the evaluation images
    calibration_samples: int = Field(ge=1)
    agreement_data: str  # the images `parity` was measured on


class Version(Strict):
    """A further version of a model: its own weights, artifact and figures; the rest of the entry (input,
    preprocessing, labels, batching) is shared, so that one request suits every version."""

    version: str = Field(pattern=VERSION_PATTERN)
    artifact: Artifact
    weights: Weights
    metrics: Metrics
    parity: Parity | None
    latency: Latency | None
    provenance: Provenance | None


class Share(Strict):
    """A version that gets `percent` of the requests that follow the policy."""

    version: str
    percent: float = Field(gt=0, le=100)


class Serving(Strict):
    """Which version answers `model=NAME`: `stable`, or `canary` for its share of the clients (by a hash
    of the client's id, so one client sees one version); `shadow` gets a copy of its share of the requests
    after the answer has gone, and its answers are only compared (docs/rollouts.md)."""

    stable: str
    canary: Share | None = None
    shadow: Share | None = None


class ModelEntry(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: str
    dataset: str
    architecture: str
    paper: str  # citation of the architecture's paper
    num_classes: int = Field(ge=2)
    labels: str  # key into Registry.label_sets
    input: InputSpec
    preprocessing: Preprocessing
    artifact: Artifact
    weights: Weights
    metrics: Metrics
    parity: Parity | None  # None while not built
    latency: Latency | None
    provenance: Provenance | None  # None while not built
    batching: Batching | None = None  # None: the service's settings apply
    quantization: Quantization | None = None  # None: the model as exported (no quantized variant)
    # what its answers look like on data it was measured on (service/monitor/reference.py), a JSON file
    # relative to the model directory; None: none recorded (the service may capture one from traffic)
    reference: str | None = None
    versions: list[Version] = []  # further versions beside the entry's own `version`
    serving: Serving | None = None  # None: the entry's own version serves alone

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if self.weights.kind == "random" and self.metrics.top1 is not None:
            raise ValueError("a model with random weights carries no accuracy")
        if self.input.channels != (1 if self.preprocessing.color_mode == "L" else 3):
            raise ValueError("input channels do not match the preprocessing colour mode")
        return self._versions_consistent()

    def _versions_consistent(self) -> ModelEntry:
        names = self.version_names
        duplicates = sorted({v for v in names if names.count(v) > 1})
        if duplicates:
            raise ValueError(f"duplicate versions: {duplicates}")
        for v in self.versions:
            if v.weights.kind == "random" and v.metrics.top1 is not None:
                raise ValueError(f"version {v.version!r}: a model with random weights carries no accuracy")
        serving = self.serving
        if serving is None:
            return self
        for role, share in (("canary", serving.canary), ("shadow", serving.shadow)):
            if share is not None and share.version == serving.stable:
                raise ValueError(f"serving: the {role} version is the stable one")
        for named in [serving.stable, *(s.version for s in (serving.canary, serving.shadow) if s)]:
            if named not in names:
                raise ValueError(f"serving: unknown version {named!r}; versions: {names}")
        return self

    @property
    def built(self) -> bool:
        return self.artifact.sha256 is not None

    @property
    def version_names(self) -> list[str]:
        """Every version of the model: the entry's own first, then `versions` in registry order."""
        return [self.version, *(v.version for v in self.versions)]

    @property
    def policy(self) -> Serving:
        """The serving policy; without one, the entry's own version serves alone."""
        return self.serving if self.serving is not None else Serving(stable=self.version)

    def version_entry(self, version: str, name: str | None = None) -> ModelEntry:
        """One version as an entry of its own (a single version, no policy), named `name` (by default
        NAME@VERSION, or NAME for the entry's own version). Raises KeyError for an unknown version."""
        if version == self.version:
            flat = (
                self
                if not self.versions and self.serving is None
                else self.model_copy(update={"versions": [], "serving": None})
            )
            return flat if name is None or name == self.name else flat.model_copy(update={"name": name})
        for v in self.versions:
            if v.version == version:
                return self.model_copy(
                    update={
                        "name": name or f"{self.name}@{version}",
                        "version": version,
                        "artifact": v.artifact,
                        "weights": v.weights,
                        "metrics": v.metrics,
                        "parity": v.parity,
                        "latency": v.latency,
                        "provenance": v.provenance,
                        "versions": [],
                        "serving": None,
                    }
                )
        raise KeyError(version)


class Registry(Strict):
    schema_version: Literal[1]
    default: str
    label_sets: dict[str, list[str]]
    models: list[ModelEntry]

    @model_validator(mode="after")
    def _references(self) -> Registry:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {duplicates}")
        if self.default not in names:
            raise ValueError(f"default model {self.default!r} is not in the registry")
        for m in self.models:
            labels = self.label_sets.get(m.labels)
            if labels is None:
                raise ValueError(f"model {m.name!r}: unknown label set {m.labels!r}")
            if len(labels) != m.num_classes:
                raise ValueError(f"model {m.name!r}: {len(labels)} labels for {m.num_classes} classes")
        return self

    def get(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ValueError(f"Unknown model {name}")

    def labels_of(self, name: str) -> list[str]:
        return self.label_sets[self.get(name).labels]


def full_decoding(registry: Registry) -> Registry:
    """The registry with `reduce_at_decode` off in every entry: every upload decoded at full size, and
    `GET /models/{name}` saying so (`CONVZOO_REDUCE_AT_DECODE=false`)."""
    models = [
        m.model_copy(update={"preprocessing": m.preprocessing.model_copy(update={"reduce_at_decode": False})})
        for m in registry.models
    ]
    return registry.model_copy(update={"models": models})


class RegistryError(ValueError):
    """The registry file cannot be read or does not match the schema."""


def _entry_errors(raw_models: list[Any]) -> list[str]:
    errors: list[str] = []
    for i, raw in enumerate(raw_models):
        name = raw.get("name", f"#{i}") if isinstance(raw, dict) else f"#{i}"
        try:
            ModelEntry.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(entry)"
                errors.append(f"model {name!r}: {where}: {err['msg']}")
    return errors


def parse_registry(raw: Any) -> Registry:
    """Validate a parsed registry document; every entry's errors are reported with its name."""
    if not isinstance(raw, dict):
        raise RegistryError("registry: the document must be a mapping")
    errors = _entry_errors(raw.get("models") or [])
    if errors:
        raise RegistryError("registry is invalid:\n  " + "\n  ".join(errors))
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(f"registry is invalid: {exc}") from None


def load_registry(path: Path) -> Registry:
    """Read and strictly validate `registry.yaml`."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read registry {path.name}: {exc}") from None
    return parse_registry(raw)


def dump_registry(registry: Registry) -> str:
    """The YAML text of a registry, fields in schema order, as the export stage writes it."""
    data = registry.model_dump(mode="json")
    for model in data["models"]:
        # absent rather than null, so that entries of unquantized models read as they always did
        if model.get("quantization") is None:
            model.pop("quantization", None)
        if model.get("reference") is None:
            model.pop("reference", None)
        if not model.get("versions"):  # likewise for a model with one version and no policy
            model.pop("versions", None)
        if model.get("serving") is None:
            model.pop("serving", None)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110))


def sha256_file(path: Path) -> str:
    """The artifact digest the registry records."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_registry(registry: Registry, path: Path) -> None:
    text = dump_registry(registry)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
