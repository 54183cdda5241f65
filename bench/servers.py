"""Start and stop the servers under test: real uvicorn processes on the loopback interface."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's CONVZOO_* variables (the bench measures the defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONVZOO_")}
    env.update(extra)
    return env


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass(frozen=True)
class Running:
    url: str
    pid: int  # also the process group of the server and its workers

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by every process of the server's group and by every
        descendant of the server (BentoML's workers leave its process group)."""
        stats: dict[int, tuple[int, int, int]] = {}  # pid: parent, group, CPU ticks
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[1]: the parent, [2]: the process group, [11] and [12]: user and system ticks
            stats[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))

        def ours(pid: int) -> bool:
            seen = set()
            while pid in stats and pid not in seen:
                parent, group, _ = stats[pid]
                if pid == self.pid or group == self.pid:
                    return True
                seen.add(pid)
                pid = parent
            return False

        return sum(ticks for pid, (_, _, ticks) in stats.items() if ours(pid)) / os.sysconf("SC_CLK_TCK")


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
    every process of its group, not only `cmd` (servers whose launcher leaves its children running)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(base + ready_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd[:4])} did not become ready; see {log}")
            time.sleep(0.2)
        yield Running(base, proc.pid)
    finally:
        _stop(proc, whole_group)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop(proc: subprocess.Popen[bytes], whole_group: bool = False) -> None:
    if proc.poll() is None or (whole_group and _group_alive(proc.pid)):
        if whole_group:
            os.killpg(proc.pid, signal.SIGTERM)  # our own process group, started above
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
            deadline = time.monotonic() + 20
            while whole_group and _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if whole_group and _group_alive(proc.pid):
                raise subprocess.TimeoutExpired(proc.args, 20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # our own process group, started above
            proc.wait(5)


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
