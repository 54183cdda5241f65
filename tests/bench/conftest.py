"""The bench tests' shared fixture: a bare FastAPI app (bench/bare_app.py) under uvicorn, for the load clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import servers


@pytest.fixture(scope="module")
def bare() -> Iterator[servers.Running]:
    port = servers.free_port()
    cmd = servers.uvicorn_app("bench.bare_app:create_app", port, workers=1, log_level="warning")
    with servers.serve(cmd, servers.clean_env(), "/health", port, Path("/dev/null")) as srv:
        yield srv
