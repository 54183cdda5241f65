"""The v2 codec against bodies built, and parsed back, by the unmodified tritonclient."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient

from service.v2.codec import Output, Tensor, decode_request, encode_response, to_binary
from service.v2.errors import V2Error

Client = httpclient.InferenceServerClient


def _input(name: str, array: np.ndarray, datatype: str, binary: bool) -> object:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _body(inputs: list[object], outputs: list[object] | None = None) -> tuple[bytes, str | None]:
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, request_id="r1")
    if isinstance(body, str):
        body = body.encode()
    return body, None if json_size is None else str(json_size)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP32", np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7),
        ("FP16", np.array([[0.5, -2.0], [65504.0, 1e-3]], dtype=np.float16)),
        ("INT64", np.array([[-(2**62), 1, 2**62]], dtype=np.int64)),
        ("UINT8", np.array([0, 255, 7], dtype=np.uint8)),
        ("BOOL", np.array([[True, False, True]])),
        ("BYTES", np.array([b"a", b"", "\u00e9t\u00e9".encode()], dtype=np.object_)),
    ],
)
def test_inputs_round_trip(datatype: str, array: np.ndarray, binary: bool) -> None:
    if datatype == "FP16" and not binary:
        pytest.skip("tritonclient sends FP16 only as binary data")
    body, header_length = _body([_input("x", array, datatype, binary)])
    assert (header_length is not None) == binary
    request = decode_request(body, header_length)
    (tensor,) = request.inputs
    assert request.id == "r1"
    assert tensor.datatype == datatype
    assert tensor.array.shape == array.shape
    if datatype == "BYTES":
        assert tensor.array.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(tensor.array, array)
        assert tensor.array.dtype == array.dtype


def test_two_binary_inputs_are_read_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, 8], dtype=np.int64)
    body, header_length = _body([_input("a", a, "FP32", True), _input("b", b, "INT64", True)])
    request = decode_request(body, header_length)
    np.testing.assert_array_equal(request.inputs[0].array, a)
    np.testing.assert_array_equal(request.inputs[1].array, b)


def test_binary_layout_is_little_endian_row_major() -> None:
    array = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    raw = to_binary(Tensor("x", "FP32", array))
    assert raw == struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    raw = to_binary(Tensor("s", "BYTES", np.array([b"ab", b"c"], dtype=np.object_)))
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"


def test_nested_json_data_is_accepted() -> None:
    header = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]}]}
    request = decode_request(json.dumps(header).encode(), None)
    np.testing.assert_array_equal(request.inputs[0].array, [[1, 2.5], [3, 4]])


def test_requested_outputs_and_binary_defaults() -> None:
    array = np.zeros((1, 2), dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=False, class_count=3)]
    body, header_length = _body([_input("x", array, "FP32", True)], outputs)
    request = decode_request(body, header_length)
    assert request.outputs is not None
    (out,) = request.outputs
    assert (out.name, out.binary, out.classification) == ("logits", False, 3)
    # No outputs named: tritonclient asks for every output as binary data.
    body, header_length = _body([_input("x", array, "FP32", True)])
    request = decode_request(body, header_length)
    assert request.outputs is None and request.binary_output is True


@pytest.mark.parametrize("binary", [True, False])
def test_response_parses_in_tritonclient(binary: bool) -> None:
    logits = np.array([[0.25, -1.5, 3.0]], dtype=np.float32)
    labels = np.array([[b"3.000000:2:Bag"]], dtype=np.object_)
    body, header_length = encode_response(
        model_name="m",
        model_version="1",
        request_id="r1",
        outputs=[
            Output(Tensor("logits", "FP32", logits), binary),
            Output(Tensor("cls", "BYTES", labels), binary),
        ],
    )
    assert (header_length is not None) == binary
    result = Client.parse_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    expected = [[b"3.000000:2:Bag"]] if binary else [["3.000000:2:Bag"]]
    assert result.as_numpy("cls").tolist() == expected
    response = result.get_response()
    assert response["model_name"] == "m" and response["id"] == "r1" and response["model_version"] == "1"


def _fp32_header(**fields: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    tensor.update(fields)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "inputs"),
        (json.dumps(_fp32_header(datatype="FP8")).encode(), None, "unsupported datatype"),
        (json.dumps(_fp32_header(shape=[3])).encode(), None, "2 elements"),
        (json.dumps(_fp32_header(shape=[-1, 2])).encode(), None, "non-negative"),
        (json.dumps(_fp32_header(shape=[1] * 100, data=[1.0])).encode(), None, "at most"),
        (json.dumps(_fp32_header(data=["1", "2"])).encode(), None, "datatype FP32"),
        (json.dumps(_fp32_header(data=[True, 1.0])).encode(), None, "datatype FP32"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', None, "NaN"),
        (json.dumps(_fp32_header(datatype="INT8", data=[1, 300])).encode(), None, "out of range"),
        (json.dumps(_fp32_header(data=None)).encode(), None, "neither"),
        (json.dumps(_fp32_header(parameters={"shared_memory_region": "r"})).encode(), None, "shared memory"),
        (json.dumps(_fp32_header()).encode(), "abc", "integer"),
        (json.dumps(_fp32_header()).encode(), "100000", "outside the body"),
    ],
)
def test_malformed_requests_are_400(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(V2Error) as info:
        decode_request(body, header_length)
    assert info.value.status == 400
    assert message in info.value.message


def _binary_body(
    size: int, payload: bytes, datatype: str = "FP32", shape: list[int] | None = None
) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape or [2],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + payload, str(len(header))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((8, b"\0" * 4), "runs past the end"),
        ((4, b"\0" * 4), "expected 8"),
        ((8, b"\0" * 12), "unclaimed"),
        ((6, struct.pack("<I", 9) + b"ab", "BYTES", [1]), "runs past its data"),
        ((2, b"\1\2", "BOOL"), "0 or 1"),
    ],
)
def test_malformed_binary_data_is_400(args: tuple[object, ...], message: str) -> None:
    body, header_length = _binary_body(*args)  # type: ignore[arg-type]
    with pytest.raises(V2Error) as info:
        decode_request(body, header_length)
    assert info.value.status == 400
    assert message in info.value.message


@pytest.mark.parametrize("depth", [40, 5000])
def test_deep_nesting_is_400(depth: int) -> None:
    data = "[" * depth + "1.0" + "]" * depth
    body = ('{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + data + "}]}").encode()
    with pytest.raises(V2Error) as info:
        decode_request(body, None)
    assert info.value.status == 400
