"""Tensor datatypes of the protocol and their little-endian NumPy equivalents."""

from __future__ import annotations

import numpy as np

# Fixed-size types; BYTES is variable-length and handled apart. BF16 has no NumPy dtype without an
# extra dependency, so it is not accepted.
FIXED: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
DATATYPES = frozenset(FIXED) | {BYTES}

_FROM_REGISTRY = {"float32": "FP32", "float16": "FP16"}


def from_registry_dtype(dtype: str) -> str:
    """The protocol datatype of a registry input dtype (`float32` -> `FP32`)."""
    try:
        return _FROM_REGISTRY[dtype]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype}") from None


def of_array(array: np.ndarray) -> str:
    """The protocol datatype of an array the service produced."""
    if array.dtype == np.object_:
        return BYTES
    for name, dtype in FIXED.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            return name
    raise ValueError(f"Unknown dtype {array.dtype}")
