"""Inference request and response bodies: JSON tensors and the binary tensor data extension.

A body is a JSON object, optionally followed by raw tensor data; `Inference-Header-Content-Length`
gives the length of the JSON part. Binary tensors are little-endian, row-major, without padding;
a BYTES element is a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.v2 import datatypes, guards
from service.v2.errors import bad_request
from service.v2.schemas import InferenceRequest, Parameters, RequestInput, RequestOutput, describe

HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray  # shaped; dtype object (of bytes) for BYTES


@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool
    classification: int  # top-k classes to return; 0 returns the tensor itself


@dataclass(frozen=True)
class Request:
    id: str | None
    parameters: Parameters
    inputs: list[Tensor]
    outputs: list[OutputRequest] | None  # None: every output of the model
    binary_output: bool  # the default for outputs not requested by name


@dataclass(frozen=True)
class Output:
    tensor: Tensor
    binary: bool


def decode_request(body: bytes, header_length: str | None, *, datatype: str | None = None) -> Request:
    """Parse and validate an inference request body; raises V2Error(400) on anything malformed.

    `datatype`: the model's input datatype, when known: an input of another is refused before its
    data is read."""
    header, binary = _split(body, header_length)
    parsed = _parse_header(header)
    inputs = _decode_inputs(parsed.inputs, binary, datatype)
    binary_output = _bool_parameter(parsed.parameters, "binary_data_output", False, "request")
    return Request(
        id=parsed.id,
        parameters=parsed.parameters,
        inputs=inputs,
        outputs=_decode_outputs(parsed.outputs, binary_output),
        binary_output=binary_output,
    )


def encode_response(
    *, model_name: str, model_version: str | None, request_id: str | None, outputs: list[Output]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary data follows it (else None)."""
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in outputs:
        entry: dict[str, Any] = {
            "name": out.tensor.name,
            "datatype": out.tensor.datatype,
            "shape": list(out.tensor.array.shape),
        }
        if out.binary:
            raw = to_binary(out.tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(out.tensor)
        entries.append(entry)
    response["outputs"] = entries
    try:
        header = json.dumps(response, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        raise bad_request(
            "an output holds NaN or infinity, which JSON cannot carry: request it as binary data"
        ) from None
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


# --- body and JSON header ---------------------------------------------------------------------------------


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise bad_request(f"{HEADER_LENGTH} must be an integer") from None
    if not 0 < length <= len(body):
        raise bad_request(f"{HEADER_LENGTH} is {length}, outside the body of {len(body)} bytes")
    return body[:length], memoryview(body)[length:]


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


# JSON tensor data becomes one Python object per element before it becomes an array (about 32 bytes and
# a microsecond each): bounded before parsing, by a byte count that costs nothing. Larger tensors go as
# binary data, which is read in place.
MAX_JSON_ELEMENTS = guards.MAX_ELEMENTS
_JSON_SLACK = 4096  # commas of the request's own structure


def _check_json_size(header: bytes) -> None:
    # Every element but the last of every list is followed by a comma; commas inside strings only
    # count against the client.
    if header.count(b",") > MAX_JSON_ELEMENTS + _JSON_SLACK:
        raise bad_request(
            f"the JSON part holds more than {MAX_JSON_ELEMENTS} values; send large tensors as binary data "
            "(the binary tensor data extension)"
        )


def _parse_header(header: bytes) -> InferenceRequest:
    _check_json_size(header)
    try:
        raw = json.loads(header.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"the inference request is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("the inference request is nested too deeply") from None
    if not isinstance(raw, dict):
        raise bad_request("the inference request must be a JSON object")
    try:
        return InferenceRequest.model_validate(raw)
    except ValidationError as exc:
        raise bad_request(f"invalid inference request: {describe(exc)}") from None


def _bool_parameter(parameters: Parameters, key: str, default: bool, where: str) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{where}: parameter {key!r} must be a boolean")
    return value


# --- inputs -----------------------------------------------------------------------------------------------


def _decode_inputs(inputs: list[RequestInput], binary: memoryview, expected: str | None) -> list[Tensor]:
    tensors: list[Tensor] = []
    offset = 0
    for spec in inputs:
        where = guards.where_of("input", spec.name)
        if any(t.name == spec.name for t in tensors):
            raise bad_request(f"{where} is given more than once")
        count = guards.check_input(where, spec.datatype, spec.shape, spec.parameters, expected)
        size = spec.parameters.get("binary_data_size")
        if size is None:
            array = _from_json(spec, count, where)
        else:
            if spec.data is not None:
                raise bad_request(f"{where} has both 'data' and 'binary_data_size'")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise bad_request(f"{where}: 'binary_data_size' must be a non-negative integer")
            if offset + size > len(binary):
                raise bad_request(f"{where}: 'binary_data_size' {size} runs past the end of the body")
            array = from_binary(spec.datatype, binary[offset : offset + size], count, where)
            offset += size
        tensors.append(Tensor(spec.name, spec.datatype, reshaped(array, spec.shape, where)))
    if offset != len(binary):
        raise bad_request(f"{len(binary) - offset} bytes of binary data follow the inputs unclaimed")
    return tensors


def reshaped(array: np.ndarray, shape: list[int], where: str) -> np.ndarray:
    try:
        return array.reshape(shape)
    except (ValueError, OverflowError, MemoryError):  # e.g. [0, 2**30, 2**30]: no elements, too big a shape
        raise bad_request(f"{where}: shape {shape} cannot be represented") from None


def from_binary(datatype: str, raw: memoryview, count: int, where: str) -> np.ndarray:
    if datatype == datatypes.BYTES:
        # Each element takes at least its 4-byte length: the count is checked before any is split.
        if count * _LENGTH.size > len(raw):
            raise bad_request(f"{where}: {len(raw)} bytes cannot hold {count} BYTES elements")
        guards.check_object_count(where, count, "BYTES elements")
        elements = _split_bytes(raw, where, count)
        if len(elements) != count:
            raise bad_request(f"{where}: {len(elements)} BYTES elements for a shape of {count}")
        return np.array(elements, dtype=np.object_)
    dtype = datatypes.FIXED[datatype]
    if len(raw) != count * dtype.itemsize:
        raise bad_request(
            f"{where}: {len(raw)} bytes of binary data, expected {count * dtype.itemsize} "
            f"({count} x {datatype})"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise bad_request(f"{where}: BOOL elements must be bytes 0 or 1")
    return array.astype(dtype.newbyteorder("="), copy=True)


def _split_bytes(raw: memoryview, where: str, count: int) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) <= count:  # one past the count is enough to refuse
        if offset + _LENGTH.size > len(raw):
            raise bad_request(f"{where}: truncated BYTES element length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise bad_request(f"{where}: BYTES element of {length} bytes runs past its data")
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    return elements


MAX_NESTING = guards.MAX_NESTING


def _flatten(data: list[Any]) -> list[Any]:
    """The elements of nested lists in order; each list is visited once (a recursive generator would
    pass every element up through every level)."""
    out: list[Any] = []
    stack: list[Iterator[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= MAX_NESTING:
                    raise bad_request(f"tensor data is nested deeper than {MAX_NESTING} levels")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _from_json(spec: RequestInput, count: int, where: str) -> np.ndarray:
    if spec.data is None:
        raise bad_request(f"{where} has neither 'data' nor 'binary_data_size'")
    guards.check_object_count(where, count, "JSON values")
    values = _flatten(spec.data)
    if len(values) != count:
        raise bad_request(f"{where}: {len(values)} elements for shape {spec.shape} ({count} elements)")
    if spec.datatype == datatypes.BYTES:
        if not all(isinstance(v, str) for v in values):
            raise bad_request(f"{where}: BYTES elements must be strings")
        return np.array([v.encode("utf-8") for v in values], dtype=np.object_)
    dtype = datatypes.FIXED[spec.datatype]
    if dtype.kind == "b":
        ok = all(isinstance(v, bool) for v in values)
    elif dtype.kind == "f":
        ok = all(_is_int(v) or isinstance(v, float) for v in values)
    else:
        ok = all(_is_int(v) for v in values)
    if not ok:
        raise bad_request(f"{where}: elements must be JSON values of datatype {spec.datatype}")
    if dtype.kind in "iu" and values:
        info = np.iinfo(dtype.type)  # type: ignore[type-var]
        if min(values) < info.min or max(values) > info.max:
            raise bad_request(f"{where}: a value is out of range for {spec.datatype}")
    try:
        return np.array(values, dtype=dtype.newbyteorder("="))
    except OverflowError:  # an integer literal beyond any float, e.g. 10**400
        raise bad_request(f"{where}: a value is out of range for {spec.datatype}") from None


# --- outputs ----------------------------------------------------------------------------------------------


def _decode_outputs(outputs: list[RequestOutput] | None, binary_default: bool) -> list[OutputRequest] | None:
    if outputs is None:
        return None
    decoded: list[OutputRequest] = []
    for spec in outputs:
        where = guards.where_of("output", spec.name)
        if any(o.name == spec.name for o in decoded):
            raise bad_request(f"{where} is requested more than once")
        guards.reject_shared_memory(spec.parameters, where)
        k = spec.parameters.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise bad_request(f"{where}: 'classification' must be a non-negative integer")
        binary = _bool_parameter(spec.parameters, "binary_data", binary_default, where)
        decoded.append(OutputRequest(spec.name, binary, k))
    return decoded


def to_binary(tensor: Tensor) -> bytes:
    """The tensor's raw data: little-endian, row-major; BYTES elements length-prefixed."""
    if tensor.datatype == datatypes.BYTES:
        parts: list[bytes] = []
        for element in tensor.array.reshape(-1):
            data = bytes(element)
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    dtype = datatypes.FIXED[tensor.datatype]
    return np.ascontiguousarray(tensor.array, dtype=dtype).tobytes()


def to_json_data(tensor: Tensor) -> list[Any]:
    """The tensor's elements as a flat JSON list, in row-major order."""
    flat = tensor.array.reshape(-1)
    if tensor.datatype == datatypes.BYTES:
        try:
            return [bytes(e).decode("utf-8") for e in flat]
        except UnicodeDecodeError:
            raise bad_request(
                f"output {tensor.name!r} is not UTF-8 text: request it as binary data"
            ) from None
    values: list[Any] = flat.tolist()
    return values
