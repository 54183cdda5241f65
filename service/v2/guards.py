"""The checks every inference input passes before its data is read, for REST (JSON and binary) and
gRPC alike: datatype, the model's datatype when known, shape, and the element count against what the
data can hold. Each costs nothing next to the data it spares reading (a 16 MB BYTES body of empty
elements took 2-4 s to split before its datatype was refused).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from service.v2 import datatypes
from service.v2.errors import bad_request

MAX_NESTING = 32  # tensor data nests one level per dimension at most
MAX_DIMENSION = (1 << 31) - 1
# Tensor data that becomes one Python object per element (JSON values, gRPC typed contents, BYTES
# elements): about 32 bytes and a microsecond each, so at most this many per tensor. Larger numeric
# tensors go as binary data (raw_input_contents on gRPC), which is read in place.
MAX_ELEMENTS = 1 << 21
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_NAME_SHOWN = 64  # a client's name echoed in an error: at most this many characters of it


def shown(name: str) -> str:
    """A client-chosen name as an error message quotes it: shortened, so that an answer (or a gRPC
    status, which must fit the metadata limit) never grows with it."""
    return repr(name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "...")


def where_of(kind: str, name: str) -> str:
    return f"{kind} {shown(name)}"


def reject_shared_memory(parameters: Mapping[str, Any], where: str) -> None:
    if any(key in parameters for key in _SHARED_MEMORY):
        raise bad_request(f"{where}: shared memory is not supported by this server")


def check_input(
    where: str,
    datatype: str,
    shape: list[int],
    parameters: Mapping[str, Any],
    expected: str | None = None,
) -> int:
    """An input's declared datatype and shape, before its data is read; its element count."""
    reject_shared_memory(parameters, where)
    if datatype not in datatypes.DATATYPES:
        raise bad_request(f"{where}: unsupported datatype {shown(datatype)}")
    if expected is not None and datatype != expected:
        raise bad_request(f"{where}: datatype {datatype}, the model expects {expected}")
    if len(shape) > MAX_NESTING:
        raise bad_request(f"{where}: tensors have at most {MAX_NESTING} dimensions")
    if any(d < 0 for d in shape):
        raise bad_request(f"{where}: shape dimensions must be non-negative, got {shape}")
    if any(d > MAX_DIMENSION for d in shape):
        raise bad_request(f"{where}: shape dimensions must be at most {MAX_DIMENSION}, got {shape}")
    return math.prod(shape)


def check_object_count(where: str, count: int, how: str) -> None:
    """A tensor whose elements each become a Python object: at most MAX_ELEMENTS of them."""
    if count > MAX_ELEMENTS:
        raise bad_request(
            f"{where}: {count} elements; at most {MAX_ELEMENTS} travel as {how}: send larger tensors "
            "as raw binary data"
        )
