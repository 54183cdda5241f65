"""Start a server command (by default `python -m service`) on the loopback interface, wait until it
answers, measure it and stop it: the one way tests, benches and scripts run a real service process.

    with launch.start(launch.Launch(log=Path("server.log"))) as server:
        httpx.get(server.url + "/models")

The command runs in its own session, so that its process group is the server and every process it
starts (front processes, decoding workers): `cpu_s()` counts them all, and a stop that must not leave
one behind can signal the group.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

HOST = "127.0.0.1"
SERVICE = (sys.executable, "-m", "service")
TICKS = os.sysconf("SC_CLK_TCK")


class LaunchError(RuntimeError):
    """The command exited, or did not answer its probe in time; the message ends with its log's tail."""


@dataclass(frozen=True)
class Probe:
    """How the server is known to be ready: `path` answers 200."""

    path: str = "/health/ready"
    scheme: str = "http"
    options: Mapping[str, Any] = field(default_factory=dict)  # httpx.get's own: verify, cert, ...
    timeout_s: float = 60.0  # the whole wait, from the start of the command
    every_s: float = 0.05
    request_timeout_s: float = 1.0
    # A reason to stop waiting, read from an answer other than 200 (a readiness that says it never will be).
    give_up: Callable[[httpx.Response], str | None] | None = None


@dataclass(frozen=True)
class Launch:
    """What to run and how. The command's environment is `env` (None: this process's), with
    CONVZOO_HOST and CONVZOO_PORT set to where it is probed unless `port_in_env` is false (the service
    reads them; other commands take their port in `command`, and `port` says which it is)."""

    command: Sequence[str] = SERVICE
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    log: Path | None = None  # stdout and stderr together; None: this process's own
    host: str = HOST
    port: int | None = None  # None: a free one
    port_in_env: bool = True
    probe: Probe = Probe()
    stop_timeout_s: float = 10.0  # SIGTERM, then SIGKILL to the whole group once this has passed
    whole_group: bool = False  # SIGTERM every process of the group, not only the command
    tail_chars: int | None = 4000  # of the log, in a LaunchError's message; None: all of it
    preexec: Callable[[], None] | None = None  # run in the child before the command (resource limits)


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (another process may take it before the command does)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process so far (0 once it has gone)."""
    stat = _stat(Path(f"/proc/{pid}/stat"))
    return (stat[11] + stat[12]) / TICKS if stat else 0.0


def group_cpu_seconds(pgid: int) -> float:
    """User and system CPU seconds so far of every live process of a process group, and of every
    descendant of its leader that left the group (BentoML's workers start sessions of their own)."""
    stats = {int(path.parent.name): s for path in Path("/proc").glob("[0-9]*/stat") if (s := _stat(path))}

    def ours(pid: int) -> bool:
        seen: set[int] = set()
        while pid in stats and pid not in seen:
            if pid == pgid or stats[pid][2] == pgid:  # [2]: the process group
                return True
            seen.add(pid)
            pid = stats[pid][1]  # [1]: the parent
        return False

    return sum(s[11] + s[12] for pid, s in stats.items() if ours(pid)) / TICKS


def _stat(path: Path) -> list[int]:
    """/proc/PID/stat's numeric fields after the command's name (index 2: the process group, 11 and 12:
    utime and stime in clock ticks); empty once the process has gone."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []
    return [int(f) if f.lstrip("-").isdigit() else 0 for f in fields]


@dataclass(frozen=True)
class Running:
    """A started command: its URL, its process (also the leader of its process group) and its log."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    launch: Launch

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path | None:
        return self.launch.log

    def log(self) -> str:
        """The log so far ("" without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by every live process of the command's group, and by
        its descendants that left it."""
        return group_cpu_seconds(self.pid)

    def stop(self, timeout_s: float | None = None) -> int:
        """Stop the command (see `stop`); its exit status."""
        return stop(self, timeout_s)

    def __enter__(self) -> Running:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start(launch: Launch = Launch()) -> Running:
    """Run the command and return once its probe answers 200. Raises LaunchError, the command stopped,
    when it exits first, when the probe's `give_up` finds a reason, or when the probe's timeout passes."""
    port = launch.port if launch.port is not None else free_port(launch.host)
    env = {**(os.environ if launch.env is None else launch.env)}
    if launch.port_in_env:
        env.update(CONVZOO_HOST=launch.host, CONVZOO_PORT=str(port))
    process = _popen(launch, env)
    running = Running(f"{launch.probe.scheme}://{launch.host}:{port}", port, process, launch)
    try:
        _wait(running)
    except BaseException:
        stop(running)
        raise
    return running


def _popen(launch: Launch, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    if launch.log is None:
        return _spawn(launch, env, None)
    launch.log.parent.mkdir(parents=True, exist_ok=True)
    with launch.log.open("wb") as out:
        return _spawn(launch, env, out)


def _spawn(launch: Launch, env: Mapping[str, str], out: BinaryIO | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(launch.command),
        cwd=launch.cwd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
        start_new_session=True,
        preexec_fn=launch.preexec,  # the callers that set it start no threads before it
    )


def _wait(running: Running) -> None:
    probe = running.launch.probe
    deadline = time.monotonic() + probe.timeout_s
    while True:
        if running.process.poll() is not None:
            raise LaunchError(_failure(running, f"it exited with {running.process.returncode}"))
        answer = _ask(running.url + probe.path, probe)
        if answer is not None and answer.status_code == 200:
            return
        reason = probe.give_up(answer) if answer is not None and probe.give_up else None
        if reason:
            raise LaunchError(_failure(running, reason))
        if time.monotonic() > deadline:
            why = f"{probe.path} did not answer 200 within {probe.timeout_s:g} s"
            raise LaunchError(_failure(running, why))
        time.sleep(probe.every_s)


def _ask(url: str, probe: Probe) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=probe.request_timeout_s, **probe.options)
    except httpx.TransportError:
        return None  # not listening yet, or too busy starting to answer


def _failure(running: Running, why: str) -> str:
    command = shlex.join(running.launch.command)
    message = f"`{command}` did not become ready: {why}"
    if running.log_path is None:
        return message
    message += f"; see {running.log_path}"
    tail = running.launch.tail_chars
    text = running.log()
    if tail is None or tail > 0:
        message += ":\n" + (text if tail is None else text[-tail:])
    return message


def stop(running: Running, timeout_s: float | None = None) -> int:
    """SIGTERM to the command (or to its whole group: `Launch.whole_group`), wait up to `timeout_s`
    (default `Launch.stop_timeout_s`) for it (and for its group to empty), then SIGKILL the whole group.
    Stopping a command that has exited already only reaps it; the exit status."""
    launch, process = running.launch, running.process
    wait_s = launch.stop_timeout_s if timeout_s is None else timeout_s
    if process.poll() is None or (launch.whole_group and _group_alive(process.pid)):
        _signal(process, signal.SIGTERM, launch.whole_group)
        try:
            process.wait(wait_s)
            if launch.whole_group:
                _wait_group(process.pid, wait_s)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL, True)
    return process.wait()


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone meanwhile
        if group:
            os.killpg(process.pid, sig)  # the command's own group: started in a new session above
        else:
            process.send_signal(sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(f"process group {pgid}", timeout_s)
        time.sleep(0.2)
