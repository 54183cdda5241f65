"""Fixtures of the service tests: the committed zoo, its Fashion-MNIST view (copied where a test changes it), Fashion-MNIST
test images encoded as PNG, and clients against the real app (ASGI) or a real uvicorn process."""

from __future__ import annotations

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

from export.fashion.data import read_idx
from service.core.registry import Artifact, ModelEntry, Registry, load_registry, save_registry
from service.core.settings import Settings
from service.main import create_app
from tests.asgi import serving
from tests.live import Server, start_service, stop_service
from tests.paths import FASHION_TEST_IMAGES, FASHION_TEST_LABELS, REPO

__all__ = ["REPO"]  # imported from here by the security tests


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


def _committed_zoo() -> Zoo:
    # CONVZOO_TEST_ZOO names a directory laid out like the repository (registry.yaml + models/).
    root = Path(os.environ.get("CONVZOO_TEST_ZOO", REPO))
    zoo = Zoo(root / "registry.yaml", root / "models")
    if not zoo.registry_path.is_file():
        pytest.fail(f"no registry.yaml in {root}: the fashion zoo must be committed (make models)")
    return zoo


def _copy(source: Zoo, registry: Registry, root: Path) -> Zoo:
    """`registry` saved under `root` with the artifacts of its built entries copied from `source`."""
    models = root / "models"
    models.mkdir(parents=True)
    for entry in registry.models:
        src = source.models_dir / entry.artifact.path
        if entry.built and src.is_file():
            dst = models / entry.artifact.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        if entry.reference and (source.models_dir / entry.reference).is_file():
            shutil.copyfile(source.models_dir / entry.reference, models / entry.reference)
    copy = Zoo(root / "registry.yaml", models)
    copy.save(registry)
    return copy


def fashion_view(registry: Registry) -> Registry:
    """The committed registry with the best Fashion-MNIST model as the default and the ImageNet models
    catalogued only (unbuilt): the zoo the tests of everything but the photo model run against. Small
    and quick to start; tests/service/test_photos.py covers the committed default."""
    fashion = [
        m
        for m in registry.models
        if m.dataset == "fashion-mnist" and m.metrics.top1 is not None and m.quantization is None
    ]
    best = max(fashion, key=lambda m: (m.metrics.top1 or 0.0, m.name))
    models = [m if m.dataset == "fashion-mnist" else _unbuilt(m) for m in registry.models]
    return registry.model_copy(update={"default": best.name, "models": models})


def _unbuilt(entry: ModelEntry) -> ModelEntry:
    return entry.model_copy(
        update={
            "artifact": Artifact(path=entry.artifact.path, bytes=None, sha256=None),
            "metrics": entry.metrics.model_copy(update={"size_mb": None}),
            "parity": None,
            "latency": None,
            "provenance": None,
        }
    )


@pytest.fixture(scope="session")
def committed_zoo() -> Zoo:
    """The committed zoo as `make run` serves it (the photo model the default), read only."""
    return _committed_zoo()


@pytest.fixture(scope="session")
def source_zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The committed Fashion-MNIST zoo (`fashion_view`), read only."""
    committed = _committed_zoo()
    return _copy(committed, fashion_view(committed.registry), tmp_path_factory.mktemp("fashion-zoo"))


@pytest.fixture
def zoo(tmp_path: Path, source_zoo: Zoo) -> Zoo:
    """A private copy of the Fashion-MNIST zoo that a test may change."""
    return _copy(source_zoo, source_zoo.registry, tmp_path / "zoo")


@pytest.fixture
def photo_zoo(tmp_path: Path, committed_zoo: Zoo) -> Zoo:
    """A private copy of the committed zoo, the photo model its default."""
    return _copy(committed_zoo, committed_zoo.registry, tmp_path / "photo-zoo")


def settings_for(zoo: Zoo, **overrides: Any) -> Settings:
    """Test settings: one inference thread, a short calibration, no background calibration, the given zoo."""
    values: dict[str, Any] = {
        "registry_path": zoo.registry_path,
        "models_dir": zoo.models_dir,
        "intra_op_threads": 1,
        "calibration_s": 0.02,
        "max_queue_delay_us": 500,
        "background_calibration": False,  # on where a test is about it
        # batches form by the delay, as the batching tests (queues filling, concurrent requests sharing a
        # batch, a failing batch) need; the default (cut at once when idle) is the batcher's own tests'
        "batch_when_idle": False,
    }
    values.update(overrides)
    return Settings(**values)


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
ServeFactory = Callable[..., Server]  # `serve(zoo, **CONVZOO_env)`


@pytest.fixture
def client_for() -> ClientFactory:
    """`async with client_for(zoo, **settings) as client`: the real app, its lifespan run, preloads done."""

    @asynccontextmanager
    async def make(
        zoo: Zoo, *, wait_ready: bool = True, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings_for(zoo, **overrides))
        async with serving(app) as served:
            if wait_ready:
                await served.manager.wait_preloaded()
            transport = httpx.ASGITransport(app=served)
            async with httpx.AsyncClient(transport=transport, base_url="http://convzoo.test") as client:
                yield client

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---- Fashion-MNIST test images ------------------------------------------------------------------------


@dataclass(frozen=True)
class FashionSample:
    images: np.ndarray  # uint8 N x 28 x 28
    labels: np.ndarray  # N

    def png(self, i: int) -> bytes:
        return encode(Image.fromarray(self.images[i]), "PNG")


@pytest.fixture(scope="session")
def fashion() -> FashionSample:
    """The first 300 Fashion-MNIST test images with their labels."""
    images = read_idx(FASHION_TEST_IMAGES)[:300]
    labels = read_idx(FASHION_TEST_LABELS)[:300].astype(np.int64)
    return FashionSample(images, labels)


async def classify(
    client: httpx.AsyncClient, fashion: FashionSample, model: str | None = None
) -> httpx.Response:
    """POST /classify with Fashion-MNIST test image 0, to `model` (default: the zoo's default)."""
    params = {"model": model} if model else {}
    return await client.post(
        "/classify", params=params, files={"file": ("x.png", fashion.png(0), "image/png")}
    )


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


# ---- a real uvicorn process ---------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
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
