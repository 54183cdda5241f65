"""A real `python -m service` process on a free loopback port for the tests (and scripts/perf_analyzer.py,
scripts/screenshot.py through tests/ui/live.py): convzoo/launch.py with the tests' defaults."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convzoo.launch import Launch, Probe, Running, free_port, start
from tests.paths import REPO

Server = Running  # the name the tests know it by
__all__ = ["Server", "free_port", "start_service", "stop_service"]


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
    Raises LaunchError with the server's whole log when the process exits or `timeout_s` passes first,
    the process stopped.
    """
    full_env = {
        **os.environ,
        "CONVZOO_REGISTRY_PATH": str(registry_path),
        "CONVZOO_MODELS_DIR": str(models_dir),
        "CONVZOO_INTRA_OP_THREADS": "1",
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_BACKGROUND_CALIBRATION": "false",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    launch = Launch(
        command=(sys.executable, "-m", module),
        env=full_env,
        cwd=REPO,
        log=log_path,
        probe=Probe(probe, scheme=scheme, options=probe_options or {}, timeout_s=timeout_s),
        tail_chars=None,
    )
    return start(launch)


def stop_service(server: Server, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL when the process has not exited after `timeout_s`."""
    server.stop(timeout_s)
