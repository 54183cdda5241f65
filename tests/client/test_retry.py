"""`convzoo classify` against a service that answers 503 with Retry-After: a model whose load takes
longer than the request deadline (a real ONNX graph, slow to load; tests/service/lifecycle_models.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.core.registry import ModelEntry
from tests.client.conftest import Photos, convzoo
from tests.live import Server
from tests.service.conftest import ServeFactory, Zoo
from tests.service.lifecycle_models import install, slow_loading_model

# 40 products of 1024 x 1024 constants: a load of about 1 s on one core, three times the deadline below.
MATMULS = 40
DEADLINE_S = "0.3"


def slow_model(zoo: Zoo) -> ModelEntry:
    entry = next(m for m in zoo.registry.models if m.built and m.name != zoo.registry.default)
    install(zoo, entry.name, slow_loading_model(entry, matmuls=MATMULS))
    return entry


def rejected(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("convzoo_rejected_requests_total{")
    )


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_503_is_retried_after_its_retry_after(
    zoo: Zoo, serve: ServeFactory, photos: Photos, tmp_path: Path
) -> None:
    entry = slow_model(zoo)
    server = serve(zoo, CONVZOO_REQUEST_TIMEOUT_S=DEADLINE_S)
    out = tmp_path / "out.jsonl"
    files = photos.paths[:3]
    # The model is cold: each file's first request waits for the deadline and gets 503 with Retry-After.
    ran = convzoo(
        "classify",
        *files,
        "-u",
        server.url,
        "--model",
        entry.name,
        "-o",
        out,
        "--retries",
        "60",
        "--max-wait",
        "2",
    )
    assert ran.returncode == 0, ran.stderr + server.log()
    got = records(out)
    assert len(got) == 3 and all(r["status"] == "ok" and r["model"] == entry.name for r in got), got
    attempts = [int(str(r["attempts"])) for r in got]
    why = (attempts, ran.seconds, ran.stderr, server.log()[-4000:])
    assert min(attempts) >= 2, why
    assert rejected(server) >= sum(a - 1 for a in attempts), why  # the service's own count of its 503s
    # Retry-After is at least 1 s (whole seconds): the longest-tried file waited that long per retry.
    assert ran.seconds >= max(attempts) - 1, why
    assert f"{sum(a - 1 for a in attempts)} retries" in ran.stderr, why


def test_files_out_of_retries_are_tried_again_by_a_rerun(
    zoo: Zoo, serve: ServeFactory, photos: Photos, tmp_path: Path
) -> None:
    entry = slow_model(zoo)
    server = serve(zoo, CONVZOO_REQUEST_TIMEOUT_S=DEADLINE_S)
    out = tmp_path / "out.jsonl"
    files = photos.paths[:3]
    first = convzoo("classify", *files, "-u", server.url, "--model", entry.name, "-o", out, "--retries", "0")
    assert first.returncode == 1
    got = records(out)
    assert [r["http_status"] for r in got] == [503] * 3 and all(r["status"] == "error" for r in got), got
    again = convzoo(
        "classify",
        *files,
        "-u",
        server.url,
        "--model",
        entry.name,
        "-o",
        out,
        "--retries",
        "60",
        "--max-wait",
        "2",
    )
    assert again.returncode == 0, again.stderr
    assert "3/3" in again.stderr  # none skipped: a 503 is no result
    got = records(out)
    assert sorted(Path(str(r["path"])) for r in got) == files and all(r["status"] == "ok" for r in got)
