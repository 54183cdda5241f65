"""`python -m export reference`: a model version's reference (service/monitor/reference.py), what its
answers and inputs look like on data it should see, recorded beside its artifact and named in its
registry entry. Fashion-MNIST models: the test split (the default); any model: a folder of images.

Images go through the service's own decoding and preprocessing, and the artifact through ONNX Runtime,
so that the reference is what the service will compare its live answers with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from export.fashion.data import load_split
from service.core.registry import ModelEntry
from service.images.postprocess import softmax
from service.images.preprocess import decode_upload, to_tensor
from service.monitor import reference
from service.monitor.reference import Reference
from service.monitor.signals import Signals, of_batch

BATCH = 256
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_PIXELS = 40_000_000  # the service's default cap


def fashion_tensors(
    entry: ModelEntry, data_dir: Path | None = None, images: slice = slice(None)
) -> np.ndarray:
    """The Fashion-MNIST test split (or a slice of it) as the service prepares a PNG upload of each."""
    split = load_split("test", data_dir)
    return np.stack([to_tensor(Image.fromarray(im), entry.preprocessing) for im in split.images[images]])


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def folder_tensors(entry: ModelEntry, folder: Path) -> np.ndarray:
    """Every image under `folder`, decoded and prepared as the service does an upload of it."""
    tensors = []
    for path in _files(folder):
        decoded = decode_upload(path.read_bytes(), max_pixels=MAX_PIXELS, draft_size=None)
        tensors.append(to_tensor(decoded.image, entry.preprocessing))
    if len(tensors) < 2:
        raise ValueError(f"{folder} holds {len(tensors)} image(s); a reference needs at least two")
    return np.stack(tensors)


def signals(entry: ModelEntry, models_dir: Path, tensors: np.ndarray) -> Signals:
    """The model's answers on `tensors`, as the service's monitor sees each."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(models_dir / entry.artifact.path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    dtype = np.float16 if entry.input.dtype == "float16" else np.float32
    parts = []
    for at in range(0, len(tensors), BATCH):
        batch = tensors[at : at + BATCH]
        logits = np.asarray(session.run(None, {name: batch.astype(dtype)})[0], dtype=np.float32)
        parts.append(of_batch(logits, softmax(logits), batch, entry.preprocessing))
    return Signals(*(np.concatenate([getattr(p, f) for p in parts]) for f in Signals.__dataclass_fields__))


def path_of(entry: ModelEntry) -> str:
    """The reference's path, relative to the model directory: beside the artifact."""
    return str(Path(entry.artifact.path).with_suffix(".reference.json"))


def record(
    entry: ModelEntry, models_dir: Path, tensors: np.ndarray, source: str
) -> tuple[ModelEntry, Reference]:
    """Write the reference of `tensors` beside the artifact; the entry that names it."""
    if not entry.built:
        raise ValueError(f"model {entry.name!r} is not built: build it first")
    built = reference.build(
        entry.name, entry.version, source, signals(entry, models_dir, tensors), entry.num_classes
    )
    relative = path_of(entry)
    reference.save(built, models_dir / relative)
    return entry.model_copy(update={"reference": relative}), built
