"""The paths the tests share: the repository and the Fashion-MNIST IDX files (read with
`export.fashion.data.read_idx`)."""

from __future__ import annotations

from pathlib import Path

from export.fashion.data import DEFAULT_DIR

REPO = Path(__file__).resolve().parents[1]
FASHION_DIR = DEFAULT_DIR  # the Debian package dataset-fashion-mnist (`make data`)
FASHION_TEST_IMAGES = FASHION_DIR / "t10k-images-idx3-ubyte.gz"
FASHION_TEST_LABELS = FASHION_DIR / "t10k-labels-idx1-ubyte.gz"
