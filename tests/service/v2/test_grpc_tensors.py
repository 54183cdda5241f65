"""ModelInferRequest messages into the `/v2` codec's request, and outputs into raw_output_contents."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from service.grpc import tensors
from service.v2.codec import Output, Tensor
from service.v2.errors import V2Error


def _request(datatype: str = "FP32", shape: tuple[int, ...] = (1, 2)) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id="r1")
    message.inputs.add(name="input", datatype=datatype, shape=list(shape))
    return message


def test_raw_and_typed_contents_decode_alike() -> None:
    x = np.array([[1.5, -2.0]], dtype=np.float32)
    raw = _request()
    raw.raw_input_contents.append(x.astype("<f4").tobytes())
    typed = _request()
    typed.inputs[0].contents.fp32_contents.extend([1.5, -2.0])
    for message in (raw, typed):
        request = tensors.decode(message)
        assert request.id == "r1" and request.outputs is None
        (tensor,) = request.inputs
        np.testing.assert_array_equal(tensor.array, x)


def test_outputs_carry_classification() -> None:
    message = _request()
    message.inputs[0].contents.fp32_contents.extend([0.0, 0.0])
    wanted = message.outputs.add(name="logits")
    wanted.parameters["classification"].int64_param = 3
    (output,) = tensors.decode(message).outputs or []
    assert output.name == "logits" and output.classification == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.inputs[0].contents.fp32_contents.extend([1.0]), "1 elements in fp32_contents"),
        (lambda m: m.raw_input_contents.extend([b"\0" * 8, b"\0" * 8]), "2 raw_input_contents for 1 inputs"),
        (lambda m: m.raw_input_contents.append(b"\0" * 7), "7 bytes of binary data"),
        (
            lambda m: (
                m.inputs.add(name="input", datatype="FP32", shape=[1, 2]),
                m.raw_input_contents.extend([b"\0" * 8, b"\0" * 8]),
            ),
            "more than once",
        ),
    ],
)
def test_malformed_messages_are_bad_requests(
    change: Callable[[pb.ModelInferRequest], object], message: str
) -> None:
    request = _request()
    change(request)
    with pytest.raises(V2Error) as info:
        tensors.decode(request)
    assert info.value.status == 400 and message in info.value.message


def test_shared_memory_is_refused() -> None:
    request = _request()
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    request.inputs[0].contents.fp32_contents.extend([0.0, 0.0])
    with pytest.raises(V2Error, match="shared memory"):
        tensors.decode(request)


def test_out_of_range_and_raw_only_datatypes_are_refused() -> None:
    small = _request("INT8")
    small.inputs[0].contents.int_contents.extend([1, 300])
    with pytest.raises(V2Error, match="out of range"):
        tensors.decode(small)
    half = _request("FP16")
    with pytest.raises(V2Error, match="raw_input_contents only"):
        tensors.decode(half)


def test_encode_puts_every_output_in_raw_contents() -> None:
    logits = Tensor("logits", "FP32", np.array([[0.5, 1.5]], dtype=np.float32))
    classes = Tensor("logits", "BYTES", np.array([[b"1.5:1:b"]], dtype=np.object_))
    response = tensors.encode(
        model_name="m", model_version="1", request_id="r", outputs=[Output(logits, True)]
    )
    assert list(response.outputs[0].shape) == [1, 2] and response.outputs[0].datatype == "FP32"
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [0.5, 1.5]
    response = tensors.encode(
        model_name="m", model_version="1", request_id=None, outputs=[Output(classes, True)]
    )
    assert response.id == "" and response.raw_output_contents[0] == b"\x07\0\0\x001.5:1:b"
