"""ModelInferRequest / ModelInferResponse messages to and from the `/v2` codec's types.

Inputs come as `raw_input_contents` (the same little-endian bytes as the binary tensor data extension,
decoded by the same code) or as typed `contents`; outputs always go back as `raw_output_contents`,
as Triton answers. Everything else (shapes against the model, classification, batching) is the `/v2`
handlers' job, shared with REST.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.v2 import codec, datatypes, guards
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


def decode(message: pb.ModelInferRequest, *, datatype: str | None = None) -> Request:
    """The codec's Request of a gRPC inference request; V2Error(400) on anything malformed. The same
    guards as REST's (service/v2/guards.py) run before any input's data is read; `datatype`: the
    model's input datatype, when known."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise bad_request(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs")
    inputs: list[Tensor] = []
    for i, spec in enumerate(message.inputs):
        where = guards.where_of("input", spec.name)
        if any(t.name == spec.name for t in inputs):
            raise bad_request(f"{where} is given more than once")
        shape = list(spec.shape)
        count = guards.check_input(where, spec.datatype, shape, parameters(spec.parameters), datatype)
        if raw:
            if spec.HasField("contents"):
                raise bad_request(f"{where} has both typed contents and raw_input_contents")
            array = codec.from_binary(spec.datatype, memoryview(raw[i]), count, where)
        else:
            array = _from_contents(spec, count, where)
        inputs.append(Tensor(spec.name, spec.datatype, codec.reshaped(array, shape, where)))
    return Request(
        id=message.id or None,
        parameters=parameters(message.parameters),
        inputs=inputs,
        outputs=_outputs(message) if message.outputs else None,
        binary_output=True,
    )


# The NumPy type each typed field's values are read into before the range check of the datatype.
_READ_AS = {
    "bool_contents": np.dtype(bool),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}


def _from_contents(spec: Any, count: int, where: str) -> np.ndarray:
    field = _CONTENTS.get(spec.datatype)
    if field is None:
        raise bad_request(f"{where}: datatype {spec.datatype} travels in raw_input_contents only")
    # Typed values become Python objects one by one: as many as REST's JSON values at most (a 16 MB
    # message of 4 M floats once held 290-380 MB as a Python list).
    guards.check_object_count(where, count, "typed contents")
    values = getattr(spec.contents, field)
    if len(values) != count:
        raise bad_request(f"{where}: {len(values)} elements in {field} for a shape of {count} elements")
    if spec.datatype == datatypes.BYTES:
        return np.array(list(values), dtype=np.object_)
    dtype = datatypes.FIXED[spec.datatype]
    read = np.fromiter(values, dtype=_READ_AS[field], count=count)  # no list of Python numbers
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype.type)  # type: ignore[type-var]
        if int(read.min()) < info.min or int(read.max()) > info.max:
            raise bad_request(f"{where}: a value is out of range for {spec.datatype}")
    return read.astype(dtype.newbyteorder("="), copy=False)


def _outputs(message: pb.ModelInferRequest) -> list[OutputRequest]:
    wanted: list[OutputRequest] = []
    for spec in message.outputs:
        where = guards.where_of("output", spec.name)
        if any(o.name == spec.name for o in wanted):
            raise bad_request(f"{where} is requested more than once")
        params = parameters(spec.parameters)
        guards.reject_shared_memory(params, where)
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
