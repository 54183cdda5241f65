"""convzoo/launch.py: a real `python -m service` on the tests' zoo in both layouts, and a tiny real HTTP
server for what the service cannot be made to do (never answer 200, ignore SIGTERM, leave a child)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from convzoo.launch import Launch, LaunchError, Probe, cpu_seconds, start, stop
from tests.paths import REPO
from tests.service.conftest import Zoo

# Answers 200 on /ready, 503 elsewhere, on CONVZOO_PORT; with --ignore-term it ignores SIGTERM, and
# with --child it leaves a sleeping child in its process group.
TINY_SERVER = """
import http.server, os, signal, subprocess, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--child" in sys.argv:
    print("child", subprocess.Popen(["sleep", "300"]).pid, flush=True)
print("listening", flush=True)
address = ("127.0.0.1", int(os.environ["CONVZOO_PORT"]))
http.server.ThreadingHTTPServer(address, Handler).serve_forever()
"""


def service(zoo: Zoo, log: Path, **env: str) -> Launch:
    settings = {
        "CONVZOO_REGISTRY_PATH": str(zoo.registry_path),
        "CONVZOO_MODELS_DIR": str(zoo.models_dir),
        "CONVZOO_INTRA_OP_THREADS": "1",
        "CONVZOO_CALIBRATION_S": "0.02",
        "CONVZOO_BACKGROUND_CALIBRATION": "false",
        **env,
    }
    return Launch(env={**os.environ, **settings}, cwd=REPO, log=log)


READY = Probe("/ready")


def tiny(tmp_path: Path, *flags: str, probe: Probe = READY, **fields: Any) -> Launch:
    script = tmp_path / "tiny_server.py"
    script.write_text(TINY_SERVER)
    command = (sys.executable, str(script), *flags)
    return Launch(command, cwd=tmp_path, log=tmp_path / "tiny.log", probe=probe, **fields)


def running(script: Path) -> list[int]:
    """The processes whose command line names `script`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(script).encode() in cmdline.read_bytes().split(b"\0"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # gone meanwhile
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_gone(pgid: int, timeout_s: float = 10) -> bool:
    """Whether the group has emptied within `timeout_s` (a front exits once it sees its parent go)."""
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_alive(pgid)


def test_the_service_with_fronts_as_a_context_manager(source_zoo: Zoo, tmp_path: Path) -> None:
    launch = service(source_zoo, tmp_path / "server.log", CONVZOO_FRONT_PROCESSES="2")
    with start(launch) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        listing = httpx.get(server.url + "/models", timeout=10).json()
        assert listing["default"] == source_zoo.registry.default
        # The group holds the service process and its two fronts, which have started Python and the
        # app: more CPU than the service process alone.
        own = cpu_seconds(server.pid)
        assert server.cpu_s() > own > 0
        assert f"HTTP on {server.url} (2 front processes)" in server.log()
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert group_gone(server.pid)  # the fronts went with it


def test_the_service_in_one_process_with_start_and_stop(source_zoo: Zoo, tmp_path: Path) -> None:
    server = start(service(source_zoo, tmp_path / "server.log", CONVZOO_FRONT_PROCESSES="0"))
    try:
        assert httpx.get(server.url + "/health/ready", timeout=10).status_code == 200
        assert server.cpu_s() > 0
    finally:
        code = stop(server)
    assert code in (0, -signal.SIGTERM)
    assert stop(server) == code  # stopping twice only reads the exit status


def test_a_service_that_exits_fails_with_its_logs_tail(tmp_path: Path) -> None:
    launch = Launch((sys.executable, "-m", "service", "--port", "9"), cwd=REPO, log=tmp_path / "s.log")
    with pytest.raises(LaunchError) as failed:
        start(launch)
    message = str(failed.value)
    assert "did not become ready: it exited with 2" in message
    assert str(tmp_path / "s.log") in message and "CONVZOO_" in message  # its usage error, from the log


def test_a_probe_that_never_answers_200_times_out_and_the_server_is_stopped(tmp_path: Path) -> None:
    launch = tiny(tmp_path, probe=Probe("/never", timeout_s=0.5))
    with pytest.raises(LaunchError, match=r"did not become ready: /never did not answer 200 within 0.5 s"):
        start(launch)
    assert running(tmp_path / "tiny_server.py") == []


def test_give_up_ends_the_wait_with_its_reason(tmp_path: Path) -> None:
    def busy(answer: httpx.Response) -> str | None:
        return f"the probe answered {answer.status_code}" if answer.status_code == 503 else None

    launch = tiny(tmp_path, probe=Probe("/never", timeout_s=60, give_up=busy), tail_chars=0)
    with pytest.raises(LaunchError) as failed:
        start(launch)
    assert str(failed.value).endswith(
        f"did not become ready: the probe answered 503; see {tmp_path / 'tiny.log'}"
    )


def test_a_server_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    server = start(tiny(tmp_path, "--ignore-term", stop_timeout_s=0.5))
    assert server.stop() == -signal.SIGKILL


def test_whole_group_stops_the_children_the_command_leaves(tmp_path: Path) -> None:
    server = start(tiny(tmp_path, "--child", whole_group=True))
    child = int(server.log().split("child ", 1)[1].split()[0])
    assert os.getpgid(child) == server.pid  # in the command's own group, not ours
    assert server.stop() == -signal.SIGTERM
    assert not group_alive(server.pid)
