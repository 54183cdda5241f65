"""Starting, loading and stopping the peers from the bench (the bench's interpreter; the peers run in theirs).

A peer that is not installed, does not start, or fails its load points is recorded with the reason and
the bench goes on with the others.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import servers
from bench.load import Body
from bench.peers import ROOT, VENV, Peer, request

LoadPoint = Callable[[servers.Running, str, int, Body], dict[str, Any]]


def version(peer: Peer) -> str | None:
    """The peer's installed version in the peers' virtualenv; None when it is not installed there."""
    python = VENV / "bin" / "python"
    if not python.is_file():
        return None
    code = f"import importlib.metadata as m; print(m.version({peer.distribution!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def body_for(peer: Peer, image: Body, directory: Path) -> Body:
    """The same image, framed the way `peer` reads it; written once per peer and image."""
    data, content_type, headers = request(peer.body, image.path.read_bytes(), image.content_type)
    path = directory / f"{peer.key}-{image.path.name}.body"
    path.write_bytes(data)
    return Body(path, content_type, headers)


def _env(paths: dict[str, str], work: Path, extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    env = servers.clean_env(**paths, **dict(extra))
    env.update(
        PYTHONPATH=str(ROOT),
        PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}",
        VIRTUAL_ENV=str(VENV),
        BENTOML_HOME=str(work / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        LOG_LOCATION=str(work / "logs"),  # TorchServe's logs, not in the working directory
        METRICS_LOCATION=str(work / "logs"),
    )
    return env


def _torchserve_worker_ready(port: int, timeout_s: float = 180) -> None:
    # /ping answers before the Python worker has loaded the model: wait for the worker itself
    url = f"http://{servers.HOST}:{port + 1}/models/classifier"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                workers = json.loads(r.read())[0].get("workers", [])
                if workers and all(w.get("status") == "READY" for w in workers):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, IndexError):
            pass
        time.sleep(0.5)
    raise RuntimeError("TorchServe's worker did not become READY")


def measure(
    peer: Peer,
    *,
    paths: dict[str, str],
    concurrencies: list[int],
    image: Body,
    work: Path,
    log: Path,
    load_point: LoadPoint,
) -> dict[str, Any]:
    """One peer serving one model: its version, status ("ok" or why not) and load points."""
    installed = version(peer)
    if installed is None:
        return {"peer": peer.label, "version": None, "status": "not installed in .venv-peers", "points": []}
    work.mkdir(parents=True, exist_ok=True)
    body = body_for(peer, image, work)
    port = servers.free_port()
    try:
        with servers.serve(
            peer.command(port, work), _env(paths, work, peer.env), peer.ready, port, log, whole_group=True
        ) as srv:
            if peer.key.startswith("torchserve"):
                _torchserve_worker_ready(port)
            points = [load_point(srv, f"{srv.url}{peer.path}", c, body) for c in concurrencies]
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"peer": peer.label, "version": installed, "status": f"failed: {exc}", "points": []}
    failed = sum(p["failed"] for p in points)
    status = "ok" if failed == 0 else f"{failed} failed requests"
    return {"peer": peer.label, "version": installed, "status": status, "points": points}
