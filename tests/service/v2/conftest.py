"""One real uvicorn process (`python -m service`) serving the committed zoo, shared by the v2 tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live import Server, start_service, stop_service
from tests.service.conftest import Zoo


@pytest.fixture(scope="module")
def live(source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on a free loopback port, default model preloaded and ready."""
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=tmp_path_factory.mktemp("v2") / "server.log",
    )
    try:
        yield server
    finally:
        stop_service(server)
