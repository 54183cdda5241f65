"""OpenTelemetry spans of REST and gRPC requests, read back from the SDK's in-memory exporter: the span
tree, the caller's `traceparent` honoured, the trace id in the JSON log line, and nothing when off."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tritonclient.utils import InferenceServerException

from service.main import create_app
from service.telemetry import tracing
from tests.asgi import serving
from tests.live import free_port, start_service, stop_service
from tests.service.conftest import ClientFactory, FashionSample, Zoo, settings_for

pytestmark = pytest.mark.anyio

MODEL = "fmnist-lenet5"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLASSIFY_TRACE_ID = "5cf92f3577b34da6a3ce929d0e0e4737"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.enable(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.disable()


def _tree(finished: tuple[ReadableSpan, ...]) -> dict[str, list[str]]:
    """Span name -> names of its children, for the trace of TRACE_ID."""
    mine = [s for s in finished if s.context is not None and format(s.context.trace_id, "032x") == TRACE_ID]
    by_id = {s.context.span_id: s for s in mine if s.context is not None}
    tree: dict[str, list[str]] = {s.name: [] for s in mine}
    for s in mine:
        if s.parent is not None and s.parent.span_id in by_id:
            tree[by_id[s.parent.span_id].name].append(s.name)
    return {name: sorted(children) for name, children in tree.items()}


def _span(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (found,) = [s for s in finished if s.name == name]
    return found


def _check_root_and_batch(finished: tuple[ReadableSpan, ...], images: int) -> None:
    root = _span(finished, "receive")
    assert (
        root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    )  # traceparent honoured
    assert root.parent.is_remote
    batch = _span(finished, "batch")
    assert batch.attributes is not None
    assert batch.attributes["convzoo.model"] == MODEL and batch.attributes["convzoo.images"] == images
    assert 1 <= int(batch.attributes["convzoo.batch.size"]) <= images  # type: ignore[arg-type]
    queue, inference = _span(finished, "queue"), _span(finished, "inference")
    assert batch.start_time is not None and batch.end_time is not None
    for child in (queue, inference):
        assert child.start_time is not None and child.end_time is not None
        assert batch.start_time <= child.start_time <= child.end_time
    assert queue.end_time == inference.start_time


async def test_classify_span_tree(
    spans: InMemorySpanExporter,
    client_for: ClientFactory,
    source_zoo: Zoo,
    fashion: FashionSample,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with client_for(source_zoo, preload=[MODEL]) as client:
        response = await client.post(
            "/classify",
            params={"model": MODEL},
            files=[
                ("file", ("a.png", fashion.png(0), "image/png")),
                ("file", ("b.png", fashion.png(1), "image/png")),
            ],
            headers={"traceparent": TRACEPARENT},
        )
    assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    tree = _tree(finished)
    assert tree["receive"] == ["batch", "decode", "decode", "preprocess", "preprocess"]
    assert tree["batch"] == ["inference", "queue"]
    _check_root_and_batch(finished, images=2)
    root = _span(finished, "receive")
    assert root.attributes is not None and root.attributes["http.route"] == "/classify"
    assert root.attributes["http.response.status_code"] == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (access,) = [r for r in lines if r.get("route") == "/classify"]
    assert access["trace_id"] == TRACE_ID


async def test_v2_infer_span_tree(
    spans: InMemorySpanExporter, client_for: ClientFactory, source_zoo: Zoo
) -> None:
    entry = source_zoo.registry.get(MODEL)
    shape = [3, *[int(d) for d in entry.input.shape[1:]]]
    body = {
        "inputs": [
            {
                "name": entry.input.name,
                "shape": shape,
                "datatype": "FP32",
                "data": [0.5] * int(np.prod(shape)),
            }
        ]
    }
    async with client_for(source_zoo, preload=[MODEL]) as client:
        response = await client.post(
            f"/v2/models/{MODEL}/infer", json=body, headers={"traceparent": TRACEPARENT}
        )
    assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    tree = _tree(finished)
    assert tree["receive"] == ["batch", "decode", "encode"]
    assert tree["batch"] == ["inference", "queue"]
    _check_root_and_batch(finished, images=3)


async def test_grpc_infer_span_tree(spans: InMemorySpanExporter, source_zoo: Zoo) -> None:
    entry = source_zoo.registry.get(MODEL)
    port = free_port()
    app = create_app(settings_for(source_zoo, preload=[MODEL], grpc_port=port))
    async with serving(app) as served:
        await served.manager.wait_preloaded()
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.zeros((2, *[int(d) for d in entry.input.shape[1:]]), np.float32)
        tensor = grpcaio.InferInput(entry.input.name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = await client.infer(MODEL, [tensor], headers={"traceparent": TRACEPARENT})
        await client.close()
    assert result.as_numpy("logits").shape == (2, entry.num_classes)
    finished = spans.get_finished_spans()
    tree = _tree(finished)
    assert tree["receive"] == ["batch", "decode", "encode"]
    assert tree["batch"] == ["inference", "queue"]
    _check_root_and_batch(finished, images=2)
    root = _span(finished, "receive")
    assert root.attributes is not None and root.attributes["rpc.method"] == "ModelInfer"
    assert root.status.is_ok


async def test_a_failed_grpc_call_is_an_error_span(spans: InMemorySpanExporter, source_zoo: Zoo) -> None:
    port = free_port()
    app = create_app(settings_for(source_zoo, preload=[MODEL], grpc_port=port))
    async with serving(app) as served:
        await served.manager.wait_preloaded()
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
        with pytest.raises(InferenceServerException):
            await client.get_model_metadata("no-such-model", headers={"traceparent": TRACEPARENT})
        await client.close()
    root = _span(spans.get_finished_spans(), "receive")
    assert root.attributes is not None and root.attributes["rpc.grpc.status_code"] == "NOT_FOUND"
    assert not root.status.is_ok and root.status.description == "Unknown model 'no-such-model'"


async def test_a_request_without_traceparent_starts_a_trace(
    spans: InMemorySpanExporter, client_for: ClientFactory, source_zoo: Zoo
) -> None:
    async with client_for(source_zoo, preload=[MODEL]) as client:
        assert (await client.get("/health/live")).status_code == 200
    (root,) = spans.get_finished_spans()
    assert root.name == "receive" and root.parent is None


async def test_off_by_default_and_free(client_for: ClientFactory, source_zoo: Zoo) -> None:
    assert not tracing.enabled()

    def f() -> int:
        return 1

    assert tracing.traced("decode", f) is f and tracing.bind(f) is f  # not even a wrapper
    assert tracing.current_trace_id() is None
    app = create_app(settings_for(source_zoo, preload=[]))
    classes: list[object] = [m.cls for m in app.user_middleware]
    assert tracing.TraceRequests not in classes


class _Collector(http.server.BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP trace receiver: keeps each decoded export request."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        pass


def _spans() -> list[Span]:
    return [
        s
        for request in _Collector.received
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def _names(*trace_ids: str) -> set[str]:
    return {s.name for s in _spans() if s.trace_id.hex() in trace_ids}


def test_otlp_export_from_a_live_server(source_zoo: Zoo, fashion: FashionSample, tmp_path: Path) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=tmp_path / "server.log",
        env={
            "CONVZOO_OTLP_ENDPOINT": endpoint,
            "CONVZOO_PRELOAD": MODEL,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "CONVZOO_FRONT_PROCESSES": "2",  # /classify answered in a front, its batch in the service
        },
        probe="/health/live",
    )
    try:
        response = httpx.get(f"{server.url}/v2/models/{MODEL}", headers={"traceparent": TRACEPARENT})
        assert response.status_code == 200
        classify_parent = f"00-{CLASSIFY_TRACE_ID}-{PARENT_ID}-01"
        response = httpx.post(
            f"{server.url}/classify?model={MODEL}",
            content=fashion.png(0),
            headers={"traceparent": classify_parent, "content-type": "image/png"},
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {"receive", "inference"} <= _names(
            TRACE_ID, CLASSIFY_TRACE_ID
        ):
            time.sleep(0.1)
        assert "receive" in _names(TRACE_ID)
        assert {"decode", "preprocess", "batch", "queue", "inference"} <= _names(CLASSIFY_TRACE_ID)
        time.sleep(0.5)  # a stray span of another process would be exported by now
        orphans = [
            s.name for s in _spans() if not s.parent_span_id and s.name in ("batch", "queue", "inference")
        ]
        assert orphans == []  # every batch belongs to a request's trace, in whichever process it ran
        log = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        assert any(r.get("trace_id") == TRACE_ID and r.get("route") == "/v2/models/{name}" for r in log)
    finally:
        stop_service(server)
        collector.shutdown()
