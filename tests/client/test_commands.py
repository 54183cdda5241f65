"""`python -m service --help`, `convzoo serve --help` and `convzoo serve` as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from convzoo.launch import Launch, Probe, free_port, start
from service.core.settings import Settings
from tests.client.conftest import convzoo
from tests.paths import REPO
from tests.service.conftest import Zoo


def test_python_m_service_help_lists_every_setting_and_exits() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m service")
    for name in Settings.model_fields:
        assert f"CONVZOO_{name.upper()}" in done.stdout
    assert "CONVZOO_PORT (8000)" in done.stdout


def test_python_m_service_refuses_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "9000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "CONVZOO_" in done.stderr and "--help" in done.stderr


def test_serve_help_lists_the_settings() -> None:
    ran = convzoo("serve", "--help")
    assert ran.returncode == 0, ran.stderr
    for text in ("python -m service", "CONVZOO_HOST", "CONVZOO_REGISTRY_PATH", "--port", "--registry"):
        assert text in ran.stdout


def test_serve_starts_the_service(source_zoo: Zoo, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CONVZOO_INTRA_OP_THREADS": "1",
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_BACKGROUND_CALIBRATION": "false",
        "CONVZOO_FRONT_PROCESSES": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "convzoo",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--registry",
        str(source_zoo.registry_path),
        "--models-dir",
        str(source_zoo.models_dir),
    ]
    # The port only on the command line: the test shows that `--port` is the one served.
    log, probe = tmp_path / "serve.log", Probe(every_s=0.1)
    launch = Launch(
        cmd, env=env, cwd=REPO, log=log, port=port, port_in_env=False, probe=probe, stop_timeout_s=20
    )
    with start(launch) as server:
        listing = httpx.get(f"{server.url}/models", timeout=10).json()
        assert listing["default"] == source_zoo.registry.default
    # uvicorn raises the signal again once it has shut down: the exit of `python -m service` on SIGTERM.
    assert server.process.returncode in (0, -signal.SIGTERM)
