"""Start and stop the servers under test: real processes on the loopback interface (convzoo/launch.py),
with the benches' defaults: the caller's CONVZOO_* variables dropped, a long start-up allowed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from convzoo.launch import HOST, Launch, Probe, Running, free_port, start

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["HOST", "ROOT", "Running", "clean_env", "free_port", "serve", "uvicorn_app"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's CONVZOO_* variables (the bench measures the defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVZOO_")}
    env.update(extra)
    return env


@contextmanager
def serve(
    cmd: list[str],
    env: dict[str, str],
    ready_path: str,
    port: int,
    log: Path,
    timeout_s: float = 180,
    *,
    whole_group: bool = False,
    cwd: Path = ROOT,
) -> Iterator[Running]:
    """Run `cmd` in `cwd` until the block ends; yields it once `ready_path` answers 200. `whole_group`: stop
    every process of its group, not only `cmd` (servers whose launcher leaves its children running).
    Raises LaunchError (a RuntimeError) naming the log when it does not become ready."""
    probe = Probe(ready_path, timeout_s=timeout_s, every_s=0.2, request_timeout_s=2)
    launch = Launch(
        tuple(cmd),
        env=env,
        cwd=cwd,
        log=log,
        port=port,
        probe=probe,
        stop_timeout_s=20,
        whole_group=whole_group,
        tail_chars=0,  # the log is named; a bench's report keeps the message on one line
    )
    with start(launch) as running:
        yield running


def uvicorn_app(app: str, port: int, *, workers: int, log_level: str) -> list[str]:
    """The same uvicorn settings as `python -m service`: factory, host, port, workers, log level."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        log_level,
    ]
