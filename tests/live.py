"""A real `python -m service` process on a free loopback port: started, awaited and stopped the same way
by every test that needs one (and by scripts/screenshot.py, through tests/ui/live.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.paths import REPO


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(
    *,
    registry_path: Path,
    models_dir: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    probe: str = "/health/ready",
    timeout_s: float = 60,
    module: str = "service",
    scheme: str = "http",
    probe_options: Mapping[str, Any] | None = None,
) -> Server:
    """Start `python -m service` on 127.0.0.1 and a free port, and wait until `probe` answers 200.

    The process runs one inference thread with a short calibration; `env` holds further variables
    (CONVZOO_* settings), which win over those; `module` is what `python -m` runs (the service, or a
    test's wrapper of it); `scheme` and `probe_options` (httpx's `verify`, `cert`) reach a server over TLS.
    Raises AssertionError with the server's log when the process exits or
    `timeout_s` passes first, the process stopped.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "CONVZOO_HOST": "127.0.0.1",
        "CONVZOO_PORT": str(port),
        "CONVZOO_REGISTRY_PATH": str(registry_path),
        "CONVZOO_MODELS_DIR": str(models_dir),
        "CONVZOO_INTRA_OP_THREADS": "1",
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_BACKGROUND_CALIBRATION": "false",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(f"{scheme}://127.0.0.1:{port}", process, log_path)
    try:
        _wait_for(server, probe, timeout_s, probe_options or {})
    except BaseException:
        stop_service(server)
        raise
    return server


def _wait_for(server: Server, probe: str, timeout_s: float, options: Mapping[str, Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + probe, timeout=1, **options).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server did not answer {probe} with 200 within {timeout_s} s:\n{server.log()}")


def stop_service(server: Server, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL when the process has not exited after `timeout_s`."""
    server.process.terminate()
    try:
        server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
