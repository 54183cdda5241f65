"""The second hostile corpus's classes (tests/security/hostile.py, SECOND_PASS) against a real
`python -m service` over real sockets: HTTP through the front processes and without them, and gRPC.
Each is a 4xx (or an answer) and the log stays one JSON object per line. What each class cost before
and after: docs/security.md, "Second pass"."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb

from service.grpc.servicer import MAX_MESSAGE
from service.v2 import guards
from tests.live import Server, free_port, start_service, stop_service
from tests.security import hostile
from tests.security.conftest import smallest
from tests.service.conftest import Zoo

# HTTP status of each class (a 200 is an answer within the budget)
EXPECTED = {
    "MPO around a 2,000-scan JPEG": 413,
    "JPEG with 4 MB of fill bytes": 400,
    "BMP RLE8, 13 KB": 415,
    "GIF, 7 M comment sub-blocks": 413,
    "PNG 28x28, 3,000 iCCP chunks": 400,
    "EPS, 4 MB of header comments": 415,
    "PPM, 4 MB of header comments": 415,
    "PNG 10,000x10,000 (bomb warning)": 413,
    "multipart 24 x 36 Mpx PNG": 413,
    "compare, one 36 Mpx RGB PNG": 200,
    "v2 BYTES, 3.5 M empty elements": 400,
}
HTTP_CASES = [c for c in hostile.SECOND_PASS if c.path != "grpc"]
GRPC_CASES = {c.name: c for c in hostile.SECOND_PASS if c.path == "grpc"}


class Live:
    def __init__(self, server: Server, grpc_port: int, model: str) -> None:
        self.server = server
        self.grpc_port = grpc_port
        self.model = model


@pytest.fixture(scope="module", params=["fronts", "one process"])
def live(
    request: pytest.FixtureRequest, source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    model = smallest(source_zoo.registry).name
    port = free_port()
    root = tmp_path_factory.mktemp("second-pass")
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=root / "server.log",
        env={
            "CONVZOO_GRPC_PORT": str(port),
            "CONVZOO_PRELOAD": model,
            "CONVZOO_WORKERS": "1",
            "CONVZOO_FRONT_PROCESSES": "2" if request.param == "fronts" else "0",
        },
    )
    try:
        yield Live(server, port, model)
    finally:
        stop_service(server)


def _log_is_json_lines(server: Server) -> None:
    text = server.log()
    complete = text[: text.rfind("\n") + 1]  # a line being written as we read is judged next time
    for line in complete.splitlines():
        assert isinstance(json.loads(line), dict), line


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.name)
def test_each_http_class_is_refused_or_answered(live: Live, case: hostile.Hostile) -> None:
    path = case.path.format(model=live.model)
    params = {"models": live.model} if path == "/compare" else {"model": live.model}
    r = httpx.post(
        live.server.url + path,
        params=params if not path.startswith("/v2") else {},
        content=case.body(),
        headers={"content-type": case.content_type, **dict(case.headers)},
        timeout=60,
    )
    assert r.status_code == EXPECTED[case.name], r.text
    if r.status_code >= 400 and not path.startswith("/v2"):
        assert r.headers["content-type"] == "application/problem+json"
    _log_is_json_lines(live.server)


def _infer(live: Live, body: bytes) -> grpc.RpcError:
    message = pb.ModelInferRequest.FromString(body)
    if message.model_name == "{model}":
        message.model_name = live.model
    with grpc.insecure_channel(
        f"127.0.0.1:{live.grpc_port}", options=[("grpc.max_send_message_length", -1)]
    ) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(message.SerializeToString(), timeout=60)
    return info.value


def test_grpc_shares_rests_tensor_guards(live: Live) -> None:
    huge = _infer(live, GRPC_CASES["gRPC shape [0, 2**62, 2**62]"].body())
    assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT, huge.details()
    assert str(guards.MAX_DIMENSION) in huge.details()
    typed = _infer(live, GRPC_CASES["gRPC 3.9 M typed FP32"].body())
    assert typed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw binary data" in typed.details()
    other = _infer(live, hostile.grpc_infer("{model}", [2], raw=b"\0" * 8).replace(b"FP32", b"INT8"))
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expects FP32" in other.details()
    _log_is_json_lines(live.server)
    assert "Traceback" not in live.server.log()


def test_a_long_model_name_is_not_echoed_whole(live: Live) -> None:
    error = _infer(live, GRPC_CASES["gRPC 20 KB model name"].body())
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert len(error.details()) <= MAX_MESSAGE
    assert "m" * 100 not in error.details()
