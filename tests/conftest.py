"""Fixtures shared across the test tree: the repository's paths, the committed registry, Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.registry import Registry, load_registry
from tests.paths import FASHION_DIR, FASHION_TEST_IMAGES, REPO


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def registry_path() -> Path:
    """The committed registry.yaml."""
    return REPO / "registry.yaml"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The committed model directory that registry.yaml's artifact paths are relative to."""
    return REPO / "models"


@pytest.fixture(scope="session")
def committed_registry(registry_path: Path) -> Registry:
    return load_registry(registry_path)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The Fashion-MNIST IDX directory (`make test` installs dataset-fashion-mnist when missing)."""
    if not FASHION_TEST_IMAGES.is_file():
        pytest.fail(f"Fashion-MNIST is missing from {FASHION_DIR}: run `make data`")
    return FASHION_DIR
