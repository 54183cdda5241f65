"""ModelInferRequest / ModelInferResponse messages to and from the `/v2` codec's types.

Inputs come as `raw_input_contents` (the same little-endian bytes as the binary tensor data extension,
decoded by the same code) or as typed `contents`; outputs always go back as `raw_output_contents`,
as Triton answers. Everything else (shapes against the model, classification, batching) is the `/v2`
handlers' job, shared with REST.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.v2 import codec, datatypes
from service.v2.codec import Output, OutputRequest, Request, Tensor
from service.v2.errors import bad_request

# The typed `contents` field that carries each datatype (FP16 and BF16 travel as raw bytes only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(entries: Any) -> dict[str, Any]:
    """A protobuf map of InferParameter as plain values."""
    out: dict[str, Any] = {}
    for key, value in entries.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def size_hint(message: pb.ModelInferRequest) -> int:
    """Roughly the bytes `decode` works through: raw contents, and 4 per typed element."""
    raw = sum(len(r) for r in message.raw_input_contents)
    typed = sum(len(getattr(t.contents, f)) for t in message.inputs for f in set(_CONTENTS.values()))
    return raw + 4 * typed


def decode(message: pb.ModelInferRequest) -> Request:
    """The codec's Request of a gRPC inference request; V2Error(400) on anything malformed."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise bad_request(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs")
    inputs: list[Tensor] = []
    for i, spec in enumerate(message.inputs):
        where = f"input {spec.name!r}"
        if any(t.name == spec.name for t in inputs):
            raise bad_request(f"{where} is given more than once")
        codec._reject_shared_memory(parameters(spec.parameters), where)
        if spec.datatype not in datatypes.DATATYPES:
            raise bad_request(f"{where}: unsupported datatype {spec.datatype!r}")
        shape = list(spec.shape)
        if any(d < 0 for d in shape) or len(shape) > codec.MAX_NESTING:
            raise bad_request(f"{where}: shape {shape} is not a tensor shape")
        count = math.prod(shape)
        if raw:
            if spec.HasField("contents"):
                raise bad_request(f"{where} has both typed contents and raw_input_contents")
            array = codec._from_binary(spec.datatype, memoryview(raw[i]), count, where)
        else:
            array = _from_contents(spec, count, where)
        inputs.append(Tensor(spec.name, spec.datatype, array.reshape(shape)))
    return Request(
        id=message.id or None,
        parameters=parameters(message.parameters),
        inputs=inputs,
        outputs=_outputs(message) if message.outputs else None,
        binary_output=True,
    )


def _from_contents(spec: Any, count: int, where: str) -> np.ndarray:
    field = _CONTENTS.get(spec.datatype)
    if field is None:
        raise bad_request(f"{where}: datatype {spec.datatype} travels in raw_input_contents only")
    values = list(getattr(spec.contents, field))
    if len(values) != count:
        raise bad_request(f"{where}: {len(values)} elements in {field} for a shape of {count} elements")
    if spec.datatype == datatypes.BYTES:
        return np.array(values, dtype=np.object_)
    dtype = datatypes.FIXED[spec.datatype]
    if dtype.kind in "iu" and values:
        info = np.iinfo(dtype.type)  # type: ignore[type-var]
        if min(values) < info.min or max(values) > info.max:
            raise bad_request(f"{where}: a value is out of range for {spec.datatype}")
    return np.array(values, dtype=dtype.newbyteorder("="))


def _outputs(message: pb.ModelInferRequest) -> list[OutputRequest]:
    wanted: list[OutputRequest] = []
    for spec in message.outputs:
        where = f"output {spec.name!r}"
        if any(o.name == spec.name for o in wanted):
            raise bad_request(f"{where} is requested more than once")
        params = parameters(spec.parameters)
        codec._reject_shared_memory(params, where)
        k = params.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise bad_request(f"{where}: 'classification' must be a non-negative integer")
        wanted.append(OutputRequest(spec.name, True, k))
    return wanted


def encode(*, model_name: str, model_version: str, request_id: str | None, outputs: list[Output]) -> Any:
    """A ModelInferResponse with every output in raw_output_contents."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id or "")
    for out in outputs:
        tensor = out.tensor
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.array.shape))
        response.raw_output_contents.append(codec.to_binary(tensor))
    return response
