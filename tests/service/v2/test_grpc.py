"""The unmodified tritonclient gRPC client (and the protocol's own stubs) against a live convzoo.

One process serves REST and gRPC from the same models; the zoo holds two built artifacts (the
registry's default and the model under test) so that the registry's other models are unavailable.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.core.catalog import build_command
from service.core.errors import (
    DeadlineExceeded,
    ModelNotBuilt,
    ModelUnavailable,
    Overloaded,
    PayloadTooLarge,
    UnknownModel,
)
from service.core.registry import ModelEntry
from service.grpc.servicer import failure_of
from service.images.preprocess import decode, to_tensor
from service.v2.errors import bad_request
from tests.live import Server, free_port, start_service, stop_service
from tests.service.conftest import FashionSample, Zoo, encode
from tests.service.published import published_tensor

MODEL = "fmnist-lenet5"  # small and fast; the default model is whatever the registry says
UPLOAD_MB = 1.0


@dataclass
class Live:
    server: Server
    grpc_url: str
    zoo: Zoo


def _two_model_zoo(source: Zoo, root: Path) -> Zoo:
    registry = source.registry
    models = root / "models"
    for name in {registry.default, MODEL}:
        artifact = registry.get(name).artifact.path
        (models / artifact).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.models_dir / artifact, models / artifact)
    zoo = Zoo(root / "registry.yaml", models)
    zoo.save(registry)
    return zoo


def _start(zoo: Zoo, log: Path, **env: str) -> Live:
    port = free_port()
    server = start_service(
        registry_path=zoo.registry_path,
        models_dir=zoo.models_dir,
        log_path=log,
        env={
            "CONVZOO_GRPC_PORT": str(port),
            "CONVZOO_MAX_UPLOAD_MB": str(UPLOAD_MB),
            "CONVZOO_PRELOAD": f"{zoo.registry.default},{MODEL}",
            **env,
        },
    )
    return Live(server, f"127.0.0.1:{port}", zoo)


@pytest.fixture(scope="module")
def live(source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("grpc")
    served = _start(_two_model_zoo(source_zoo, root), root / "server.log")
    try:
        yield served
    finally:
        stop_service(served.server)


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(live.grpc_url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def entry(source_zoo: Zoo) -> ModelEntry:
    return source_zoo.registry.get(MODEL)


def _tensor(fashion: FashionSample, entry: ModelEntry, indices: list[int]) -> np.ndarray:
    """The service's own preprocessing: the tensors /classify builds from the same PNGs."""
    return np.stack(
        [to_tensor(decode(fashion.png(i), max_pixels=10**6), entry.preprocessing) for i in indices]
    )


def _infer(
    client: grpcclient.InferenceServerClient, x: np.ndarray, class_count: int = 0, **kwargs: object
) -> grpcclient.InferResult:
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    wanted = grpcclient.InferRequestedOutput("logits", class_count=class_count)
    result: grpcclient.InferResult = client.infer(MODEL, [tensor], outputs=[wanted], **kwargs)
    return result


def _code(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


# --- health and metadata ----------------------------------------------------------------------------------


def test_health(live: Live, client: grpcclient.InferenceServerClient, entry: ModelEntry) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, entry.version)
    with grpc.insecure_channel(live.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_metadata_equals_rest(
    live: Live, client: grpcclient.InferenceServerClient, entry: ModelEntry
) -> None:
    rest = httpx.get(f"{live.server.url}/v2").json()
    meta = client.get_server_metadata(as_json=True)
    assert meta == {"name": rest["name"], "version": rest["version"], "extensions": rest["extensions"]}
    rest_model = httpx.get(f"{live.server.url}/v2/models/{MODEL}").json()
    model = client.get_model_metadata(MODEL)
    assert (model.name, list(model.versions), model.platform) == (MODEL, [entry.version], "onnx_onnxv1")
    for got, want in ((model.inputs, rest_model["inputs"]), (model.outputs, rest_model["outputs"])):
        assert [(t.name, t.datatype, list(t.shape)) for t in got] == [
            (t["name"], t["datatype"], t["shape"]) for t in want
        ]
    config = client.get_model_config(MODEL).config
    rest_config = httpx.get(f"{live.server.url}/v2/models/{MODEL}/config").json()
    assert config.max_batch_size == rest_config["max_batch_size"] >= 1
    assert list(config.input[0].dims) == rest_config["input"][0]["dims"]
    assert config.output[0].dims == [entry.num_classes]


# --- inference --------------------------------------------------------------------------------------------


def test_infer_raw_matches_onnx_runtime(
    client: grpcclient.InferenceServerClient, entry: ModelEntry, source_zoo: Zoo, fashion: FashionSample
) -> None:
    x = _tensor(fashion, entry, [0, 1, 2])
    result = _infer(client, x, request_id="grpc-7")
    session = ort.InferenceSession(str(source_zoo.artifact(MODEL)), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {entry.input.name: x})
    logits = result.as_numpy("logits")
    assert logits is not None and logits.shape == (3, entry.num_classes) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    response = result.get_response()
    assert (
        response.id == "grpc-7" and response.model_name == MODEL and response.model_version == entry.version
    )


def test_infer_typed_contents_equals_raw(
    live: Live, client: grpcclient.InferenceServerClient, entry: ModelEntry, fashion: FashionSample
) -> None:
    x = _tensor(fashion, entry, [3, 4])
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(live.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert response.id == "typed" and list(response.outputs[0].shape) == [2, entry.num_classes]
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, -1)
    np.testing.assert_array_equal(typed, _infer(client, x).as_numpy("logits"))


def test_class_count_matches_classify(
    live: Live, client: grpcclient.InferenceServerClient, entry: ModelEntry, fashion: FashionSample
) -> None:
    k = 3
    for i in range(4):
        x = _tensor(fashion, entry, [i])
        classes = _infer(client, x, class_count=k).as_numpy("logits")
        assert classes is not None and classes.shape == (1, k)
        parsed = [bytes(c).decode().split(":", 2) for c in classes[0]]
        response = httpx.post(
            f"{live.server.url}/classify",
            params={"model": MODEL, "top_k": k},
            content=fashion.png(i),
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["results"][0]["predictions"]
        assert [(int(idx), label) for _, idx, label in parsed] == [
            (p["index"], p["label"]) for p in predictions
        ]


def test_a_client_reproduces_classify_from_the_published_preprocessing(
    live: Live, client: grpcclient.InferenceServerClient, fashion: FashionSample
) -> None:
    """A 512x600 photo of a garment: decoded at 1/8 (64x75) where the entry reduces at decoding, which
    the client does too, from `GET /models/{name}` alone (docs/preprocessing.md)."""
    large = Image.fromarray(fashion.images[0]).resize((512, 600), Image.Resampling.BICUBIC)
    jpeg = encode(large, "JPEG", quality=90)
    pre = httpx.get(f"{live.server.url}/models/{MODEL}").json()["preprocessing"]
    assert pre["reduce_at_decode"] is True
    logits = _infer(client, published_tensor(jpeg, pre)).as_numpy("logits")
    assert logits is not None
    e = np.exp(logits[0].astype(np.float64) - logits[0].max())
    probs = e / e.sum()
    response = httpx.post(
        f"{live.server.url}/classify",
        params={"model": MODEL, "top_k": 10},
        content=jpeg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert (result["width"], result["height"]) == (512, 600)
    assert result["predictions"][0]["index"] == int(np.argmax(probs))
    assert max(abs(probs[p["index"]] - p["score"]) for p in result["predictions"]) < 1e-5


def test_statistics_rise(
    client: grpcclient.InferenceServerClient, entry: ModelEntry, fashion: FashionSample
) -> None:
    (before,) = client.get_inference_statistics(MODEL).model_stats
    _infer(client, _tensor(fashion, entry, [5, 6]))
    (after,) = client.get_inference_statistics(MODEL, entry.version).model_stats
    assert after.inference_count == before.inference_count + 2
    assert after.execution_count > before.execution_count
    assert after.inference_stats.success.count == before.inference_stats.success.count + 2
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.batch_stats and all(b.batch_size >= 1 for b in after.batch_stats)
    assert MODEL in {s.name for s in client.get_inference_statistics().model_stats}


def test_repository_index_is_read_only(client: grpcclient.InferenceServerClient, live: Live) -> None:
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert set(index) == {m.name for m in live.zoo.registry.models}
    assert index[MODEL] == "READY"
    ready = {m.name for m in client.get_model_repository_index(as_json=False).models if m.state == "READY"}
    assert MODEL in ready
    for action in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as info:
            action(MODEL)
        assert _code(info) == "StatusCode.INVALID_ARGUMENT"
        assert "not allowed" in str(info.value.message())
    assert client.is_model_ready(MODEL)


def test_requests_are_counted_and_logged_like_rest(
    live: Live, client: grpcclient.InferenceServerClient, entry: ModelEntry, fashion: FashionSample
) -> None:
    _infer(client, _tensor(fashion, entry, [7]), headers={"x-request-id": "grpc-log-1"})
    time.sleep(0.2)
    lines = [json.loads(line) for line in live.server.log().splitlines() if "grpc-log-1" in line]
    assert len(lines) == 1
    assert lines[0]["route"] == "/inference.GRPCInferenceService/ModelInfer"
    assert lines[0]["status"] == 200 and lines[0]["model"] == MODEL
    metrics = httpx.get(f"{live.server.url}/metrics").text
    assert 'route="/inference.GRPCInferenceService/ModelInfer",status="200"' in metrics


# --- errors -----------------------------------------------------------------------------------------------


def test_not_found(client: grpcclient.InferenceServerClient, entry: ModelEntry) -> None:
    for call in (
        lambda: client.get_model_metadata("no-such-model"),
        lambda: client.get_model_metadata(MODEL, "0"),
        lambda: client.get_model_config("../registry.yaml"),
        lambda: client.infer("no-such-model", []),
        lambda: client.load_model("../../etc/passwd"),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()  # type: ignore[no-untyped-call]
        assert _code(info) == "StatusCode.NOT_FOUND", info.value.message()


def test_invalid_argument(client: grpcclient.InferenceServerClient, entry: ModelEntry) -> None:
    good = np.zeros((1, *[int(d) for d in entry.input.shape[1:]]), dtype=np.float32)
    cases: list[tuple[str, np.ndarray, str, str]] = [
        ("input", np.zeros((1, 3, 5, 5), np.float32), "FP32", "shape"),
        ("input", good.astype(np.float64), "FP64", "datatype"),
        ("x", good, "FP32", "one input"),
        ("input", np.full_like(good, np.nan), "FP32", "NaN"),
    ]
    for name, x, datatype, message in cases:
        tensor = grpcclient.InferInput(name, list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [tensor])
        assert _code(info) == "StatusCode.INVALID_ARGUMENT" and message in str(info.value.message())


def test_a_model_not_built_is_a_failed_precondition_naming_its_command(
    client: grpcclient.InferenceServerClient, live: Live
) -> None:
    index = client.get_model_repository_index().models
    unbuilt = [m.name for m in index if m.state == "UNAVAILABLE" and "not built" in m.reason]
    if not unbuilt:
        pytest.skip("every registry model has its artifact in this zoo")
    name = unbuilt[0]
    assert not client.is_model_ready(name)
    shape = [1, *[int(d) for d in live.zoo.registry.get(name).input.shape[1:]]]
    tensor = grpcclient.InferInput(live.zoo.registry.get(name).input.name, shape, "FP32")
    tensor.set_data_from_numpy(np.zeros(shape, np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [tensor])
    # Not UNAVAILABLE, which clients retry: the model stays as it is until someone builds it.
    assert _code(info) == "StatusCode.FAILED_PRECONDITION"
    assert build_command(live.zoo.registry.get(name)) in str(info.value.message())


def test_over_the_upload_limit_is_resource_exhausted(
    live: Live, client: grpcclient.InferenceServerClient, entry: ModelEntry
) -> None:
    per_image = int(np.prod([int(d) for d in entry.input.shape[1:]])) * 4
    x = np.zeros(
        (int(UPLOAD_MB * 1e6) // per_image + 1, *[int(d) for d in entry.input.shape[1:]]), np.float32
    )
    with pytest.raises(InferenceServerException) as info:
        _infer(client, x)
    assert _code(info) == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.is_server_ready()  # and the server carries on
    under = x[: min(200, int(UPLOAD_MB * 1e6) // per_image - 8)]  # within the limit and the batch cap
    logits = _infer(client, under).as_numpy("logits")
    assert logits is not None and logits.shape == (len(under), entry.num_classes)


def test_client_deadline(
    client: grpcclient.InferenceServerClient, entry: ModelEntry, fashion: FashionSample
) -> None:
    x = _tensor(fashion, entry, [0] * 64)
    with pytest.raises(InferenceServerException) as info:
        _infer(client, x, client_timeout=1e-4)
    assert _code(info) == "StatusCode.DEADLINE_EXCEEDED"


def test_server_deadline(source_zoo: Zoo, tmp_path: Path, entry: ModelEntry, fashion: FashionSample) -> None:
    """The service's own request timeout (CONVZOO_REQUEST_TIMEOUT_S) ends a gRPC call as on REST."""
    served = _start(
        _two_model_zoo(source_zoo, tmp_path), tmp_path / "server.log", CONVZOO_REQUEST_TIMEOUT_S="1e-6"
    )
    try:
        c = grpcclient.InferenceServerClient(served.grpc_url)
        with pytest.raises(InferenceServerException) as info:
            _infer(c, _tensor(fashion, entry, [0]))
        assert _code(info) == "StatusCode.DEADLINE_EXCEEDED"
        assert "deadline passed" in str(info.value.message())  # the service's words, not the transport's
        c.close()
    finally:
        stop_service(served.server)


def test_unsupported_methods_are_unimplemented(client: grpcclient.InferenceServerClient) -> None:
    for call in (client.get_system_shared_memory_status, client.get_cuda_shared_memory_status):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert _code(info) == "StatusCode.UNIMPLEMENTED"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (bad_request("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownModel("x"), grpc.StatusCode.NOT_FOUND),
        (ModelUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (ModelNotBuilt("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (Overloaded("x"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (RuntimeError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code_mapping(exc: Exception, code: grpc.StatusCode) -> None:
    assert failure_of(exc).code == code
