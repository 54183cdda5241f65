"""`python -m service --help`, `convzoo serve --help` and `convzoo serve` as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.core.settings import Settings
from tests.client.conftest import convzoo
from tests.live import free_port
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
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log"
            ).read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        listing = httpx.get(f"http://127.0.0.1:{port}/models", timeout=10).json()
        assert listing["default"] == source_zoo.registry.default
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # uvicorn raises the signal again once it has shut down: the exit of `python -m service` on SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM)
