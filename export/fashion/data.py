"""Fashion-MNIST from its IDX files (the Debian package dataset-fashion-mnist, or any directory)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataMissingError(FileNotFoundError):
    """The Fashion-MNIST IDX files are not where they were looked for."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, N x 28 x 28
    labels: np.ndarray  # int64, N

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _find(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise DataMissingError(
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir}. Install the Debian package "
        "(`sudo apt-get install dataset-fashion-mnist`, which puts the IDX files in "
        f"{DEFAULT_DIR}) or pass --data DIR with a directory holding the four IDX files."
    )


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if raw[2] != 0x08:  # unsigned byte, the only type Fashion-MNIST uses
        raise ValueError(f"{path.name}: unexpected IDX data type {raw[2]:#x}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, data_dir: Path | None = None) -> Split:
    """The train (60,000) or test (10,000) split; raises DataMissingError saying how to get the data."""
    directory = data_dir or DEFAULT_DIR
    images_stem, labels_stem = _FILES[split]
    images = read_idx(_find(directory, images_stem))
    labels = read_idx(_find(directory, labels_stem)).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return Split(images=images, labels=labels)


def normalisation(train: Split) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels, scaled to [0, 1]."""
    pixels = train.images.astype(np.float64) / 255.0
    return round(float(pixels.mean()), 4), round(float(pixels.std()), 4)


def to_input(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 N x 28 x 28 -> float32 N x 1 x 28 x 28, normalised as the registry's preprocessing says."""
    x = images.astype(np.float32)[:, None, :, :] / 255.0
    return ((x - mean) / std).astype(np.float32)
