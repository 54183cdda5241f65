"""Structured logs: one JSON line per request, the request id taken from X-Request-ID or generated, echoed."""

from __future__ import annotations

import json
import logging
import re

import pytest

from service.main import create_app
from service.telemetry.logging import JsonFormatter, configure_logging
from tests.service.conftest import ClientFactory, FashionSample, Zoo, settings_for

pytestmark = pytest.mark.anyio


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "convzoo.access"]


def test_formatter_writes_one_json_object_with_extras() -> None:
    record = logging.LogRecord("convzoo.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    record.model = "m"
    record.request_id = "r-1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "hello there" and data["level"] == "warning" and data["logger"] == "convzoo.x"
    assert data["model"] == "m" and data["request_id"] == "r-1"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


async def test_one_line_per_request_with_the_given_id_echoed(
    client_for: ClientFactory, zoo: Zoo, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(zoo) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="convzoo.access"):
            response = await client.get(
                "/v2/models/" + zoo.registry.default, headers={"X-Request-ID": "abc-123"}
            )
    assert response.headers["X-Request-ID"] == "abc-123"
    (record,) = _access(caplog)
    assert record.request_id == "abc-123"  # type: ignore[attr-defined]
    assert record.status == 200 and record.model == zoo.registry.default  # type: ignore[attr-defined]
    assert record.route == "/v2/models/{name}" and record.duration_ms >= 0  # type: ignore[attr-defined]
    json.loads(JsonFormatter().format(record))


async def test_ids_are_generated_when_missing_or_unsafe(
    client_for: ClientFactory, zoo: Zoo, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(zoo) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="convzoo.access"):
            plain = await client.get("/health/live")
            unsafe = await client.get("/health/live", headers={"X-Request-ID": "x" * 300})
            missing = await client.get("/no/such/route")
    ids = [r.headers["X-Request-ID"] for r in (plain, unsafe, missing)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 3
    assert missing.status_code == 404
    assert [r.request_id for r in _access(caplog)] == ids  # type: ignore[attr-defined]


async def test_timings_and_model_of_an_inference(
    client_for: ClientFactory, zoo: Zoo, caplog: pytest.LogCaptureFixture
) -> None:
    entry = zoo.registry.get(zoo.registry.default)
    shape = [1, *[int(d) for d in entry.input.shape[1:]]]
    count = shape[1] * shape[2] * shape[3]
    body = {"inputs": [{"name": entry.input.name, "shape": shape, "datatype": "FP32", "data": [0.0] * count}]}
    async with client_for(zoo) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="convzoo.access"):
            response = await client.post(f"/v2/models/{entry.name}/infer", json=body)
    assert response.status_code == 200
    (record,) = _access(caplog)
    assert record.model == entry.name  # type: ignore[attr-defined]
    assert set(record.timings_ms) == {"queue", "inference"}  # type: ignore[attr-defined]


def test_level_comes_from_settings(zoo: Zoo) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        create_app(settings_for(zoo, log_level="WARNING"))
        assert root.level == logging.WARNING
        assert sum(1 for h in root.handlers if isinstance(h.formatter, JsonFormatter)) == 1
        configure_logging("debug")  # idempotent: still one JSON handler
        assert root.level == logging.DEBUG
        assert sum(1 for h in root.handlers if isinstance(h.formatter, JsonFormatter)) == 1
    finally:
        root.setLevel(level)


async def test_classify_requests_log_their_model_and_timings(
    client_for: ClientFactory, zoo: Zoo, caplog: pytest.LogCaptureFixture, fashion: FashionSample
) -> None:
    async with client_for(zoo) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="convzoo.access"):
            response = await client.post(
                "/classify", content=fashion.png(0), headers={"Content-Type": "image/png"}
            )
    assert response.status_code == 200
    (record,) = _access(caplog)
    assert record.model == zoo.registry.default  # type: ignore[attr-defined]
    assert set(record.timings_ms) == {"queue", "inference"}  # type: ignore[attr-defined]


async def test_auto_selection_logs_the_chosen_model(
    client_for: ClientFactory, zoo: Zoo, caplog: pytest.LogCaptureFixture, fashion: FashionSample
) -> None:
    async with client_for(zoo) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="convzoo.access"):
            response = await client.post(
                "/classify",
                params={"model": "auto", "dataset": "fashion-mnist"},
                content=fashion.png(0),
                headers={"Content-Type": "image/png"},
            )
    assert response.status_code == 200, response.text
    (record,) = _access(caplog)
    assert record.model == response.json()["model"]  # type: ignore[attr-defined]
