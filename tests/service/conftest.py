"""Fixtures of the service tests: the committed fashion zoo (copied where a test changes it), Fashion-MNIST
test images encoded as PNG, and clients against the real app (ASGI) or a real uvicorn process."""

from __future__ import annotations

import gzip
import io
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.main import create_app
from service.registry import Registry, load_registry, save_registry
from service.settings import Settings
from tests.live import Server, start_service, stop_service

REPO = Path(__file__).resolve().parents[2]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Zoo:
    """A registry file and its model directory."""

    registry_path: Path
    models_dir: Path

    @property
    def registry(self) -> Registry:
        return load_registry(self.registry_path)

    def save(self, registry: Registry) -> None:
        save_registry(registry, self.registry_path)

    def artifact(self, name: str) -> Path:
        return self.models_dir / self.registry.get(name).artifact.path


def _source_zoo() -> Zoo:
    # CONVZOO_TEST_ZOO names a directory laid out like the repository (registry.yaml + models/).
    root = Path(os.environ.get("CONVZOO_TEST_ZOO", REPO))
    zoo = Zoo(root / "registry.yaml", root / "models")
    if not zoo.registry_path.is_file():
        pytest.fail(f"no registry.yaml in {root}: the fashion zoo must be committed (make models)")
    return zoo


@pytest.fixture(scope="session")
def source_zoo() -> Zoo:
    """The committed zoo, read only."""
    return _source_zoo()


@pytest.fixture
def zoo(tmp_path: Path, source_zoo: Zoo) -> Zoo:
    """A private copy of the committed zoo that a test may change."""
    registry = source_zoo.registry
    models = tmp_path / "models"
    models.mkdir()
    for entry in registry.models:
        src = source_zoo.models_dir / entry.artifact.path
        if src.is_file():
            dst = models / entry.artifact.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    copy = Zoo(tmp_path / "registry.yaml", models)
    copy.save(registry)
    return copy


def settings_for(zoo: Zoo, **overrides: Any) -> Settings:
    """Test settings: one inference thread, a short calibration, no background calibration, the given zoo."""
    values: dict[str, Any] = {
        "registry_path": zoo.registry_path,
        "models_dir": zoo.models_dir,
        "intra_op_threads": 1,
        "calibration_s": 0.02,
        "max_queue_delay_us": 500,
        "background_calibration": False,  # on where a test is about it
    }
    values.update(overrides)
    return Settings(**values)


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for() -> ClientFactory:
    """`async with client_for(zoo, **settings) as client`: the real app, its lifespan run, preloads done."""

    @asynccontextmanager
    async def make(zoo: Zoo, *, wait_ready: bool = True, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings_for(zoo, **overrides))
        async with app.router.lifespan_context(app):
            if wait_ready:
                await app.state.manager.wait_preloaded()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://convzoo.test") as client:
                yield client

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---- Fashion-MNIST test images ------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@dataclass(frozen=True)
class FashionSample:
    images: np.ndarray  # uint8 N x 28 x 28
    labels: np.ndarray  # N

    def png(self, i: int) -> bytes:
        return encode(Image.fromarray(self.images[i]), "PNG")


@pytest.fixture(scope="session")
def fashion() -> FashionSample:
    """The first 300 Fashion-MNIST test images with their labels."""
    images = _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:300]
    labels = _read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[:300].astype(np.int64)
    return FashionSample(images, labels)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


# ---- a real uvicorn process ---------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `python -m service` with CONVZOO_* settings, returned once it answers /health/live; stopped
    after the test."""
    servers: list[Server] = []

    def start(zoo: Zoo, **env: str) -> Server:
        server = start_service(
            registry_path=zoo.registry_path,
            models_dir=zoo.models_dir,
            log_path=tmp_path / f"server-{len(servers)}.log",
            env=env,
            probe="/health/live",
            timeout_s=30,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_service(server)
