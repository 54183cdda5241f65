"""An interrupted run (SIGINT, as Ctrl-C sends) leaves a valid output, and the same command resumes it.

The run goes through a relay in this test that forwards the first requests to the live service and
holds the others unanswered, so the interruption always finds the same files done."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.client.conftest import Photos, convzoo
from tests.live import Server, free_port
from tests.paths import REPO


class Gate:
    """An ASGI app relaying the first `passing` requests to `upstream`; later ones wait forever."""

    def __init__(self, upstream: str, passing: int) -> None:
        self.upstream, self.left = upstream, passing

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.left <= 0:
            await asyncio.Event().wait()  # until the server stops
        self.left -= 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in (b"content-type",)}
        url = f"{self.upstream}{scope['path']}?{scope['query_string'].decode()}"
        async with httpx.AsyncClient() as client:
            r = await client.post(url, content=body, headers=headers, timeout=30)
        await send(
            {
                "type": "http.response.start",
                "status": r.status_code,
                "headers": [(b"content-type", r.headers["content-type"].encode())],
            }
        )
        await send({"type": "http.response.body", "body": r.content})


@pytest.fixture
def gate(server: Server) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        Gate(server.url, 4),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    relay = uvicorn.Server(config)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not relay.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    relay.should_exit = True
    thread.join(10)


def test_an_interrupted_run_leaves_a_valid_output_and_resumes(
    server: Server, gate: str, photos: Photos, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    files = photos.paths[:10]
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convzoo",
            "classify",
            *map(str, files),
            "-u",
            gate,
            "-o",
            str(out),
            "-c",
            "2",
        ],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and len(out.read_text().splitlines()) >= 4):
            assert time.monotonic() < deadline and cli.poll() is None
            time.sleep(0.05)
        cli.send_signal(signal.SIGINT)
        _, stderr = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130, stderr
    assert "interrupted" in stderr and "6 files left" in stderr, stderr
    done = [json.loads(line) for line in out.read_text().splitlines()]  # whole lines only
    assert len(done) == 4 and all(r["status"] == "ok" for r in done)

    again = convzoo("classify", *files, "-u", server.url, "-o", out)
    assert again.returncode == 0, again.stderr
    assert "4 of 10 files already in" in again.stderr and "6/6" in again.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["path"]) for r in records) == files and all(r["status"] == "ok" for r in records)
