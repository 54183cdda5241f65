"""One real uvicorn process (`python -m service`) serving the committed zoo, shared by the v2 tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import REPO, Server, Zoo, free_port


@pytest.fixture(scope="module")
def live(source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on a free loopback port, default model preloaded and ready."""
    port = free_port()
    env = {
        **os.environ,
        "CONVZOO_HOST": "127.0.0.1",
        "CONVZOO_PORT": str(port),
        "CONVZOO_REGISTRY_PATH": str(source_zoo.registry_path),
        "CONVZOO_MODELS_DIR": str(source_zoo.models_dir),
        "CONVZOO_INTRA_OP_THREADS": "1",
        "CONVZOO_CALIBRATION_S": "0.02",
        "OMP_NUM_THREADS": "1",
    }
    log_path: Path = tmp_path_factory.mktemp("v2") / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
