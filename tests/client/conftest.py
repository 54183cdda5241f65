"""Fixtures of the client tests: a live `python -m service` on the Fashion-MNIST zoo, folders of real
Fashion-MNIST test images as PNG files, and `python -m convzoo` run as a process against the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.live import Server, start_service, stop_service
from tests.paths import REPO
from tests.service.conftest import (  # noqa: F401  (fixtures, re-exported for this directory)
    FashionSample,
    Zoo,
    fashion,
    serve,
    source_zoo,
    zoo,
)


@pytest.fixture(scope="module")
def server(source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    """One live service (the default settings: front processes on two or more cores) for a test module."""
    log = tmp_path_factory.mktemp("client-server") / "server.log"
    live = start_service(
        registry_path=source_zoo.registry_path, models_dir=source_zoo.models_dir, log_path=log
    )
    yield live
    stop_service(live)


@dataclass(frozen=True)
class Photos:
    """A folder of Fashion-MNIST test images as PNG files: `count` of them, a third in a subfolder."""

    root: Path
    paths: list[Path]


def write_photos(root: Path, sample: FashionSample, count: int) -> Photos:
    paths = []
    for i in range(count):
        folder = root / "sub" if i % 3 == 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"item-{i:03d}.png"
        path.write_bytes(sample.png(i))
        paths.append(path)
    return Photos(root, sorted(paths))


@pytest.fixture
def photos(tmp_path: Path, fashion: FashionSample) -> Photos:  # noqa: F811
    return write_photos(tmp_path / "photos", fashion, 12)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def convzoo(*args: str | Path, timeout_s: float = 120) -> Ran:
    """`python -m convzoo ARGS` as a process, from the repository root."""
    env = {**os.environ, "COLUMNS": "160"}  # rich's width when the output is not a terminal
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "convzoo", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - t0)


def classified(server: Server) -> float:
    """POST /classify requests the service has answered, any model and status (its own metrics)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    series = [line for line in text.splitlines() if line.startswith("convzoo_requests_total{")]
    return sum(float(line.split()[-1]) for line in series if 'route="/classify"' in line)


def settled_classified(server: Server, at_least: float = 0, timeout_s: float = 5) -> float:
    """`classified` once it has reached `at_least` and not changed for 0.3 s (the front processes send
    their counts every 50 ms), or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last, still_since = classified(server), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        value = classified(server)
        if value != last:
            last, still_since = value, time.monotonic()
        elif value >= at_least and time.monotonic() - still_since >= 0.3:
            break
    return last
