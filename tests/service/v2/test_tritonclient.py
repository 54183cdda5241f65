"""The unmodified tritonclient HTTP client against a live convzoo on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from service.core.registry import ModelEntry
from service.images.preprocess import decode, to_tensor
from tests.live import Server
from tests.service.conftest import FashionSample, Zoo


@pytest.fixture(scope="module")
def client(live: Server) -> Iterator[object]:
    c = httpclient.InferenceServerClient(live.url.removeprefix("http://"), network_timeout=30)
    yield c
    c.close()


@pytest.fixture(scope="module")
def default(source_zoo: Zoo) -> ModelEntry:
    registry = source_zoo.registry
    return registry.get(registry.default)


def _tensor(fashion: FashionSample, entry: ModelEntry, indices: list[int]) -> np.ndarray:
    """The service's own preprocessing of Fashion-MNIST test images: the tensors /classify would build."""
    return np.stack(
        [to_tensor(decode(fashion.png(i), max_pixels=10**6), entry.preprocessing) for i in indices]
    )


def _infer(client: object, entry: ModelEntry, x: np.ndarray, binary: bool, class_count: int = 0) -> object:
    tensor = httpclient.InferInput(entry.input.name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=class_count)
    return client.infer(entry.name, [tensor], outputs=[wanted], request_id="req-7")  # type: ignore[attr-defined]


def test_health_and_server_metadata(client: object) -> None:
    assert client.is_server_live()  # type: ignore[attr-defined]
    assert client.is_server_ready()  # type: ignore[attr-defined]
    meta = client.get_server_metadata()  # type: ignore[attr-defined]
    assert meta["name"] == "convzoo"
    assert {"binary_tensor_data", "classification", "statistics"} <= set(meta["extensions"])


def test_model_metadata(client: object, default: ModelEntry) -> None:
    meta = client.get_model_metadata(default.name)  # type: ignore[attr-defined]
    assert meta["name"] == default.name
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["versions"] == [default.version]
    channels, height, width = default.input.shape[1:]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, channels, height, width]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, default.num_classes]}]
    assert client.is_model_ready(default.name)  # type: ignore[attr-defined]
    assert client.is_model_ready(default.name, default.version)  # type: ignore[attr-defined]
    assert client.get_model_metadata(default.name, default.version)["name"] == default.name  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["no-such-model", "../x", "..", "%2e%2e"])
def test_unknown_models_are_404(client: object, name: str) -> None:
    assert not client.is_model_ready(name)  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata(name)  # type: ignore[attr-defined]
    assert info.value.status() == "404"


@pytest.mark.parametrize(
    "path", ["/v2/models//ready", "/v2/models/..%2Fregistry.yaml", "/v2/models/x/versions/1"]
)
def test_bad_model_paths_are_404_in_the_protocol_shape(live: Server, path: str) -> None:
    response = httpx.get(live.url + path)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_model_config(client: object, default: ModelEntry) -> None:
    config = client.get_model_config(default.name)  # type: ignore[attr-defined]
    assert config["name"] == default.name and config["max_batch_size"] >= 1
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [int(d) for d in default.input.shape[1:]]
    assert config["output"][0]["dims"] == [default.num_classes]


def test_unknown_version_is_404(client: object, default: ModelEntry) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata(default.name, "0")  # type: ignore[attr-defined]
    assert info.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_onnx_runtime(
    client: object, default: ModelEntry, source_zoo: Zoo, fashion: FashionSample, binary: bool
) -> None:
    x = _tensor(fashion, default, [0, 1, 2])
    result = _infer(client, default, x, binary)
    logits = result.as_numpy("logits")  # type: ignore[attr-defined]
    session = ort.InferenceSession(
        str(source_zoo.models_dir / default.artifact.path), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(None, {default.input.name: x})
    assert logits.shape == (3, default.num_classes) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    response = result.get_response()  # type: ignore[attr-defined]
    assert response["id"] == "req-7" and response["model_name"] == default.name
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) == binary


@pytest.mark.parametrize("binary", [True, False])
def test_class_count_matches_classify(
    live: Server, client: object, default: ModelEntry, fashion: FashionSample, binary: bool
) -> None:
    k = 3
    for i in range(4):
        x = _tensor(fashion, default, [i])
        classes = _infer(client, default, x, binary, class_count=k).as_numpy("logits")  # type: ignore[attr-defined]
        assert classes.shape == (1, k)
        parsed = [(bytes(c) if binary else str(c).encode()).decode().split(":", 2) for c in classes[0]]
        raw = _infer(client, default, x, True).as_numpy("logits")[0]  # type: ignore[attr-defined]
        response = httpx.post(
            live.url + "/classify",
            params={"model": default.name, "top_k": k},
            content=fashion.png(i),
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["results"][0]["predictions"]
        assert [int(idx) for _, idx, _ in parsed] == [p["index"] for p in predictions]
        assert [label for _, _, label in parsed] == [p["label"] for p in predictions]
        # The value is the model's raw output (as Triton does), not the softmax score of /classify.
        for value, idx, _ in parsed:
            assert float(value) == pytest.approx(float(raw[int(idx)]), abs=1e-5)
        probs = np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum()
        assert [p["score"] for p in predictions] == pytest.approx(
            [float(probs[p["index"]]) for p in predictions], abs=1e-5
        )


def _stat(client: object, name: str, version: str = "") -> dict[str, object]:
    (stat,) = client.get_inference_statistics(name, version)["model_stats"]  # type: ignore[attr-defined]
    assert isinstance(stat, dict)
    return stat


def test_statistics_counts_go_up(client: object, default: ModelEntry, fashion: FashionSample) -> None:
    before = _stat(client, default.name)
    x = _tensor(fashion, default, [5, 6])
    _infer(client, default, x, True)
    after = _stat(client, default.name, default.version)
    assert after["name"] == default.name and after["version"] == default.version
    assert after["inference_count"] == before["inference_count"] + 2  # type: ignore[operator]
    assert after["execution_count"] > before["execution_count"]  # type: ignore[operator]
    stats, old = after["inference_stats"], before["inference_stats"]
    assert isinstance(stats, dict) and isinstance(old, dict)
    for key in ("success", "queue", "compute_infer"):
        assert stats[key]["count"] == old[key]["count"] + 2
        assert stats[key]["ns"] > old[key]["ns"]
    assert stats["fail"]["count"] == old["fail"]["count"]
    batch_stats = after["batch_stats"]
    assert isinstance(batch_stats, list) and batch_stats
    assert all(b["batch_size"] >= 1 and b["compute_infer"]["count"] >= 1 for b in batch_stats)
    assert after["last_inference"] >= before["last_inference"]  # type: ignore[operator]
    everything = client.get_inference_statistics()["model_stats"]  # type: ignore[attr-defined]
    assert default.name in {s["name"] for s in everything}


def test_repository_index_is_read_only(client: object, default: ModelEntry, source_zoo: Zoo) -> None:
    index = client.get_model_repository_index()  # type: ignore[attr-defined]
    assert {m["name"] for m in index} == {m.name for m in source_zoo.registry.models}
    assert {"name": default.name, "version": default.version, "state": "READY"} in index
    for action in (client.load_model, client.unload_model):  # type: ignore[attr-defined]
        with pytest.raises(InferenceServerException) as info:
            action(default.name)
        assert info.value.status() == "400"
    assert client.is_model_ready(default.name)  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException) as info:
        client.load_model("../../etc/passwd")  # type: ignore[attr-defined]
    assert info.value.status() == "404"


def test_bad_inputs_are_400(client: object, default: ModelEntry) -> None:
    wrong_shape = np.zeros((1, 3, 5, 5), dtype=np.float32)
    wrong_type = np.zeros((1, *[int(d) for d in default.input.shape[1:]]), dtype=np.float64)
    cases: list[tuple[str, np.ndarray, str, str]] = [
        ("input", wrong_shape, "FP32", "shape"),
        ("input", wrong_type, "FP64", "datatype"),
        ("x", wrong_type.astype(np.float32), "FP32", "one input"),
    ]
    for name, x, datatype, message in cases:
        tensor = httpclient.InferInput(name, list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as info:
            client.infer(default.name, [tensor])  # type: ignore[attr-defined]
        assert info.value.status() == "400"
        assert message in info.value.message()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(
    client: object, default: ModelEntry, fashion: FashionSample, algorithm: str
) -> None:
    x = _tensor(fashion, default, [0])
    tensor = httpclient.InferInput(default.input.name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    plain = client.infer(default.name, [tensor]).as_numpy("logits")  # type: ignore[attr-defined]
    packed = client.infer(default.name, [tensor], request_compression_algorithm=algorithm)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(packed.as_numpy("logits"), plain)
    for binary in (True, False):
        wanted = httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=2)
        both = client.infer(  # type: ignore[attr-defined]
            default.name,
            [tensor],
            outputs=[wanted],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert both.as_numpy("logits").shape == (1, 2)


def test_server_log_is_json_lines_with_request_ids(live: Server) -> None:
    httpx.get(live.url + "/v2/health/live", headers={"X-Request-ID": "trace-v2-42"})
    time.sleep(0.2)  # the line is written after the response is sent
    records = [json.loads(line) for line in live.log().splitlines() if line.strip()]
    mine = [r for r in records if r.get("request_id") == "trace-v2-42"]
    assert len(mine) == 1
    assert mine[0]["status"] == 200 and mine[0]["route"] == "/v2/health/live"
