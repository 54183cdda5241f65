"""Drive a server with wrk (or the Python generator) and turn its BENCH_JSON line into images/s and p50/p99."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers (a peer's protocol may need them)


def available_tool() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def _command(
    tool: str, url: str, concurrency: int, seconds: float, body: Body | None
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if tool == "wrk":
        env["BENCH_BODY"] = str(body.path) if body else ""
        env["BENCH_CONTENT_TYPE"] = body.content_type if body else ""
        env["BENCH_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in body.headers) if body else ""
        # One wrk thread: it keeps all connections busy and leaves the cores to the server.
        cmd = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(HERE / "wrk_post.lua"),
            url,
        ]
        return cmd, env
    cmd = [
        sys.executable,
        "-m",
        "bench.pyload",
        url,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
    ]
    if body:
        cmd += ["--body", str(body.path), "--content-type", body.content_type]
        cmd += [arg for k, v in body.headers for arg in ("--header", f"{k}: {v}")]
    return cmd, env


def run(
    url: str, *, concurrency: int, seconds: float, body: Body | None, tool: str, warmup_s: float = 1.0
) -> dict[str, Any]:
    """Warm up, then load `url` with `concurrency` connections for `seconds`; one request is one image."""
    if warmup_s > 0:
        _once(url, concurrency=concurrency, seconds=warmup_s, body=body, tool=tool)
    raw = _once(url, concurrency=concurrency, seconds=seconds, body=body, tool=tool)
    duration_s = raw["duration_us"] / 1e6
    failed = sum(raw["errors"].values())
    return {
        "concurrency": concurrency,
        "tool": tool,
        "requests": raw["requests"],
        "failed": failed,
        "seconds": round(duration_s, 3),
        "images_per_s": (raw["requests"] - raw["errors"]["status"]) / duration_s if duration_s else 0.0,
        "p50_ms": raw["p50_us"] / 1e3,
        "p90_ms": raw["p90_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3,
    }


def _once(url: str, *, concurrency: int, seconds: float, body: Body | None, tool: str) -> dict[str, Any]:
    cmd, env = _command(tool, url, concurrency, seconds, body)
    proc = subprocess.run(
        cmd, env=env, cwd=HERE.parent, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return dict(json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(f"{cmd[0]} gave no result (exit {proc.returncode}): {proc.stderr[-500:]}")
