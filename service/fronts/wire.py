"""The frames between a front process and the service, over a Unix socket.

Each frame: u32 length of the rest, u8 kind, u64 request id, then the kind's payload. Tensors travel as
their raw bytes with dtype and shape, so neither side pickles or copies them more than once; the other
frames (calls and their replies, errors, observations) are JSON.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

# INFER (front -> service): a model's name, the time left, the client's bucket for a canary (-1: none) and
# a batch; RESULT: logits, timings and the version that answered.
# CALL (front -> service): {"method", "args"} as JSON; REPLY: its JSON answer. ERROR answers either.
# OBSERVE (front -> service): the front's finished requests, for the service's metrics.
INFER, RESULT, ERROR, OBSERVE, CALL, REPLY = 1, 2, 3, 4, 5, 6

_HEAD = struct.Struct("<IBQ")  # length of the rest, kind, id
_F64 = struct.Struct("<d")
_TIMINGS = struct.Struct("<dd")
_BUCKET = struct.Struct("<i")
MAX_FRAME = 1 << 30


@dataclass(frozen=True)
class Frame:
    kind: int
    id: int
    payload: memoryview


def frame(kind: int, request_id: int, *parts: bytes | memoryview) -> bytes:
    size = 9 + sum(len(p) for p in parts)
    return b"".join([_HEAD.pack(size, kind, request_id), *parts])


def _tensor(array: np.ndarray) -> list[bytes | memoryview]:
    array = np.ascontiguousarray(array)
    dtype = array.dtype.str.encode()
    shape = struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)
    return [bytes([len(dtype)]), dtype, shape, array.data.cast("B")]


def _read_tensor(payload: memoryview, at: int) -> np.ndarray:
    size = payload[at]
    dtype = np.dtype(bytes(payload[at + 1 : at + 1 + size]).decode())
    at += 1 + size
    ndim = payload[at]
    shape = struct.unpack_from(f"<{ndim}I", payload, at + 1)
    at += 1 + 4 * ndim
    return np.frombuffer(payload[at:], dtype=dtype).reshape(shape)


def infer(
    request_id: int, name: str, batch: np.ndarray, remaining_s: float, bucket: int | None = None
) -> bytes:
    encoded = name.encode()
    return frame(
        INFER,
        request_id,
        struct.pack("<H", len(encoded)),
        encoded,
        _F64.pack(remaining_s),
        _BUCKET.pack(-1 if bucket is None else bucket),
        *_tensor(batch),
    )


def read_infer(payload: memoryview) -> tuple[str, float, int | None, np.ndarray]:
    (size,) = struct.unpack_from("<H", payload)
    name = bytes(payload[2 : 2 + size]).decode()
    (remaining_s,) = _F64.unpack_from(payload, 2 + size)
    (bucket,) = _BUCKET.unpack_from(payload, 2 + size + 8)
    return (
        name,
        remaining_s,
        None if bucket < 0 else bucket,
        _read_tensor(payload, 2 + size + 8 + _BUCKET.size),
    )


def result(
    request_id: int, logits: np.ndarray, queue_ms: float, inference_ms: float, version: str = ""
) -> bytes:
    encoded = version.encode()[:255]
    return frame(
        RESULT,
        request_id,
        _TIMINGS.pack(queue_ms, inference_ms),
        bytes([len(encoded)]),
        encoded,
        *_tensor(logits),
    )


def read_result(payload: memoryview) -> tuple[np.ndarray, float, float, str]:
    queue_ms, inference_ms = _TIMINGS.unpack_from(payload)
    size = payload[_TIMINGS.size]
    at = _TIMINGS.size + 1
    version = bytes(payload[at : at + size]).decode()
    return _read_tensor(payload, at + size), queue_ms, inference_ms, version


def json_frame(kind: int, request_id: int, body: dict[str, Any]) -> bytes:
    return frame(kind, request_id, json.dumps(body, separators=(",", ":")).encode())


def read_json(payload: memoryview) -> dict[str, Any]:
    body = json.loads(bytes(payload))
    if not isinstance(body, dict):
        raise ValueError("a JSON frame holds an object")
    return body


class Writer:
    """Frames written together: those made in one turn of the event loop leave in one system call."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        if not self.transport.is_closing():
            self.transport.write(data)


class Reader:
    """Frames out of a byte stream, as it arrives in pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        at = 0
        view = memoryview(self._buffer)
        try:
            while len(self._buffer) - at >= _HEAD.size:
                size, kind, request_id = _HEAD.unpack_from(self._buffer, at)
                if size > MAX_FRAME or size < 9:
                    raise ValueError(f"a frame of {size} bytes")
                end = at + 4 + size
                if end > len(self._buffer):
                    break
                frames.append(Frame(kind, request_id, memoryview(bytes(view[at + _HEAD.size : end]))))
                at = end
        finally:
            view.release()
        del self._buffer[:at]
        return frames
