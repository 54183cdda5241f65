"""What each `/v2` endpoint answers, on top of the model manager. No endpoint loads or registers models
from outside the registry: names are looked up in the registry only, never on the filesystem."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import re
import time
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.core.errors import UnknownModel, unavailable_error, unknown_model
from service.core.registry import NAME_PATTERN, ModelEntry
from service.images.postprocess import softmax
from service.interfaces import Models, ModelStatus
from service.interfaces import ModelStatistics as StatisticsSource
from service.models.batcher import InferTimings
from service.monitor.signals import Upload
from service.monitor.watch import Watch
from service.rollouts import versions
from service.telemetry import tracing
from service.v2 import datatypes
from service.v2.classification import top_k
from service.v2.codec import Output, Request, Tensor, decode_request, encode_response
from service.v2.errors import V2Error, bad_request, not_found, unavailable
from service.v2.guards import shown
from service.v2.schemas import (
    ConfigTensor,
    DynamicBatching,
    ModelConfig,
    ModelMetadata,
    ModelStatistics,
    RepositoryModel,
    ServerMetadata,
    TensorMetadata,
)

SERVER_NAME = "convzoo"
EXTENSIONS = ["binary_tensor_data", "classification", "statistics", "model_repository"]
PLATFORM = "onnx_onnxv1"
OUTPUT_NAME = "logits"
OFF_LOOP_BYTES = 64 * 1024  # request bodies above this are decoded on a worker thread
_NAME = re.compile(NAME_PATTERN)
_REPOSITORY_STATE = {
    "loaded": "READY",
    "loading": "LOADING",
    "available": "UNAVAILABLE",
    "unavailable": "UNAVAILABLE",
}


def server_metadata(version: str) -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=version, extensions=EXTENSIONS)


MAX_SUGGESTED = 128  # a longer name gets no "did you mean": the search costs with its length


def resolve(manager: Models, name: str, version: str | None = None) -> ModelStatus:
    """The model's state; 404 for a name not in the registry or a version it does not have."""
    if not _NAME.fullmatch(name) and len(name) > MAX_SUGGESTED:  # any length: the client's
        raise not_found(f"Unknown model {shown(name)}")
    try:
        if not _NAME.fullmatch(name):  # not a registry name, but maybe one mistyped (ALEXNET)
            raise unknown_model(name, [m.name for m in manager.registry.models])
        state = manager.state(name)
    except UnknownModel as exc:
        guess = (exc.extensions or {}).get("did_you_mean")
        raise not_found(
            f"Unknown model {shown(name)}" + (f"; did you mean '{guess}'?" if guess else "")
        ) from None
    if version is not None and version != state.entry.version:
        versions_of = manager.registry.get(versions.split(state.entry.name)[0]).version_names
        if version not in versions_of:
            raise not_found(
                f"Model {shown(name)} has no version {shown(version)}; its versions: {', '.join(versions_of)}"
            )
        return manager.state(versions.joined(name, version))  # that version, pinned
    return state


def model_ready(state: ModelStatus) -> None:
    if state.build_command is not None:  # 409, as for its inference requests: built by a command, not time
        raise unavailable_error(state)
    if state.status != "loaded":
        reason = f": {state.reason}" if state.reason else " (it loads on its first inference request)"
        raise unavailable(f"Model '{state.entry.name}' is {state.status}{reason}")


def _input_shape(entry: ModelEntry) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in entry.input.shape]


def model_metadata(state: ModelStatus) -> ModelMetadata:
    entry = state.entry
    return ModelMetadata(
        name=entry.name,
        versions=[entry.version],
        platform=PLATFORM,
        inputs=[
            TensorMetadata(
                name=entry.input.name,
                datatype=datatypes.from_registry_dtype(entry.input.dtype),
                shape=_input_shape(entry),
            )
        ],
        outputs=[TensorMetadata(name=OUTPUT_NAME, datatype="FP32", shape=[-1, entry.num_classes])],
    )


def model_config(state: ModelStatus) -> ModelConfig:
    """Triton's model configuration (`GET .../config`), as far as it describes a registry model."""
    entry = state.entry
    max_batch = state.model.max_batch_size if state.model is not None else state.policy.max_batch_size
    return ModelConfig(
        name=entry.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        version_policy={"latest": {"num_versions": 1}},
        max_batch_size=max_batch,
        input=[
            ConfigTensor(
                name=entry.input.name,
                data_type="TYPE_" + datatypes.from_registry_dtype(entry.input.dtype),
                dims=_input_shape(entry)[1:],
            )
        ],
        output=[ConfigTensor(name=OUTPUT_NAME, data_type="TYPE_FP32", dims=[entry.num_classes])],
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=state.policy.max_queue_delay_us),
    )


def repository_index(manager: Models, body: bytes) -> list[RepositoryModel]:
    """Every registry model with its state; `{"ready": true}` keeps the loaded ones only."""
    ready_only = False
    if body.strip():
        try:
            options = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise bad_request("the repository index request is not valid JSON") from None
        if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
            raise bad_request('the repository index request takes {"ready": true|false}')
        ready_only = options.get("ready", False)
    index = []
    for state in manager.states():
        if ready_only and state.status != "loaded":
            continue
        item = RepositoryModel(
            name=state.entry.name, version=state.entry.version, state=_REPOSITORY_STATE[state.status]
        )
        if state.status == "available":  # set only when there is one: the member is absent otherwise
            item.reason = "not loaded; it loads on its first inference request"
        elif state.reason:
            item.reason = state.reason
        index.append(item)
    return index


def refuse_model_control(manager: Models, name: str) -> V2Error:
    resolve(manager, name)
    return bad_request(
        "explicit model load / unload is not allowed: the server serves the models of its registry "
        "and loads them on first use"
    )


async def control_model(
    manager: Models, name: str, action: Literal["load", "unload"], *, admin: bool
) -> None:
    """Triton's repository extension, `load` or `unload`: with API keys on, the request reaching here holds
    the admin scope (service/access/auth.py) and it is done; without keys, refused, as models load on first use.

    `load` of a loaded model is where a reload of its versions from the registry goes (model versions)."""
    if not admin:
        raise refuse_model_control(manager, name)
    state = resolve(manager, name)
    if action == "load":
        await manager.ensure_loaded(state.entry.name)
    elif state.status == "loaded" and not await manager.unload_model(state.entry.name):
        raise bad_request(
            f"model {state.entry.name} is not unloaded: it is in use, or the default or a preloaded model"
        )


def statistics(
    manager: Models, stats: StatisticsSource, name: str | None = None, version: str | None = None
) -> ModelStatistics:
    states = [resolve(manager, name, version)] if name is not None else manager.states()
    return ModelStatistics.model_validate({"model_stats": [_version_stat(manager, stats, s) for s in states]})


def _version_stat(manager: Models, stats: StatisticsSource, state: ModelStatus) -> dict[str, Any]:
    """The statistics of the version `state` is, kept under its key (service/rollouts/versions.py), named as the model."""
    model = versions.split(state.entry.name)[0]
    key = versions.key(manager.registry.get(model), state.entry.version)
    return {**stats.model_stat(key, state.entry.version), "name": model}


# --- infer ------------------------------------------------------------------------------------------------


def read_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The request body, decompressed (gzip or deflate, as tritonclient sends) up to `limit` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding not in ("gzip", "deflate"):
        raise bad_request(f"Content-Encoding '{encoding}' is not supported; use gzip, deflate or none")
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        body = decompressor.decompress(raw, limit + 1)
    except zlib.error:
        raise bad_request(f"the body is not valid {encoding} data") from None
    if len(body) > limit:
        raise bad_request(f"the decompressed body is larger than the limit of {limit} bytes")
    return body


def _accepted(accept_encoding: str) -> list[str]:
    codings = []
    for part in accept_encoding.split(","):
        name, _, params = part.strip().lower().partition(";")
        if params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            codings.append(name.strip())
    return codings


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """The response body compressed with gzip or deflate when the client asks for it (tritonclient's
    `response_compression_algorithm`), with the Content-Encoding to send; else unchanged."""
    accepted = _accepted(accept_encoding or "")
    if "gzip" in accepted:
        return gzip.compress(body, compresslevel=6, mtime=0), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 6), "deflate"  # HTTP's "deflate" is the zlib format
    return body, None


@dataclass(frozen=True)
class InferAnswer:
    body: bytes
    header_length: int | None
    timings: InferTimings


def _model_input(request: Request, entry: ModelEntry, max_images: int) -> np.ndarray:
    expected = datatypes.from_registry_dtype(entry.input.dtype)
    names = [t.name for t in request.inputs]
    if names != [entry.input.name]:
        raise bad_request(f"model '{entry.name}' takes one input named '{entry.input.name}', got {names}")
    (tensor,) = request.inputs
    if tensor.datatype != expected:
        raise bad_request(
            f"input '{tensor.name}': datatype {tensor.datatype}, model '{entry.name}' expects {expected}"
        )
    shape = _input_shape(entry)
    got = list(tensor.array.shape)
    if len(got) != len(shape) or any(d != -1 and d != g for d, g in zip(shape, got, strict=True)):
        raise bad_request(f"input '{tensor.name}': shape {got} does not match the model's {shape}")
    if not 1 <= got[0] <= max_images:
        raise bad_request(
            f"input '{tensor.name}': the batch must hold 1 to {max_images} samples, got {got[0]}"
        )
    if not np.isfinite(tensor.array).all():
        raise bad_request(f"input '{tensor.name}' holds NaN or infinite values")
    return tensor.array


def _outputs(request: Request, logits: Tensor, labels: list[str]) -> list[Output]:
    if request.outputs is None:
        return [Output(logits, request.binary_output)]
    outputs = []
    for wanted in request.outputs:
        if wanted.name != OUTPUT_NAME:
            raise bad_request(f"unknown output '{wanted.name}'; the model's output is '{OUTPUT_NAME}'")
        tensor = top_k(logits, wanted.classification, labels) if wanted.classification else logits
        outputs.append(Output(tensor, wanted.binary))
    return outputs


async def infer(
    manager: Models,
    state: ModelStatus,
    body: bytes,
    header_length: str | None,
    *,
    timeout_s: float,
    max_images: int,
    pool: Executor | None = None,
    watch: Watch | None = None,
) -> InferAnswer:
    """Decode, validate against the model's metadata, run through the batcher, encode."""
    entry = state.entry
    # The model's datatype is known: an input of another is refused before its data is read.
    decode = functools.partial(
        tracing.traced("decode", decode_request), datatype=datatypes.from_registry_dtype(entry.input.dtype)
    )
    if len(body) > OFF_LOOP_BYTES:
        # Parsing a large JSON tensor takes tens of milliseconds: not on the event loop.
        request = await asyncio.get_running_loop().run_in_executor(pool, decode, body, header_length)
    else:
        request = decode(body, header_length)
    batch = _model_input(request, entry, max_images)
    # Validate the requested outputs before spending inference on the request.
    _outputs(request, Tensor(OUTPUT_NAME, "FP32", np.zeros((0, entry.num_classes), np.float32)), [])
    deadline = time.monotonic() + timeout_s
    logits, timings = await tracing.infer(manager, entry.name, batch, deadline=deadline)
    _watched(watch, entry, logits, batch)
    tensor = Tensor(OUTPUT_NAME, "FP32", np.asarray(logits, dtype=np.float32))
    outputs = _outputs(request, tensor, manager.labels(entry.name))
    payload, length = tracing.traced("encode", encode_response)(
        model_name=versions.split(entry.name)[0],
        model_version=timings.version or entry.version,  # the version that answered
        request_id=request.id,
        outputs=outputs,
    )
    return InferAnswer(payload, length, timings)


def _watched(watch: Watch | None, entry: ModelEntry, logits: np.ndarray, batch: np.ndarray) -> None:
    """The answers, for the monitor (service/monitor/): counted and in the drift window as /classify's
    are; the protocol's answer has no member for `unusual`. The size is the tensor's (no upload here)."""
    if watch is None or not watch.enabled:
        return
    n, channels, height, width = batch.shape
    seen = [Upload(width, height, channels == 1, False)] * n
    watch.answered(entry, logits, softmax(logits), batch.astype(np.float32, copy=False), seen)


async def run(
    manager: Models,
    state: ModelStatus,
    request: Request,
    *,
    timeout_s: float,
    max_images: int,
    watch: Watch | None = None,
) -> tuple[list[Output], InferTimings]:
    """A decoded request (from any transport, e.g. gRPC): validated, run through the batcher, its
    outputs (classification applied) returned unencoded."""
    entry = state.entry
    batch = _model_input(request, entry, max_images)
    _outputs(request, Tensor(OUTPUT_NAME, "FP32", np.zeros((0, entry.num_classes), np.float32)), [])
    logits, timings = await tracing.infer(manager, entry.name, batch, deadline=time.monotonic() + timeout_s)
    _watched(watch, entry, logits, batch)
    tensor = Tensor(OUTPUT_NAME, "FP32", np.asarray(logits, dtype=np.float32))
    return _outputs(request, tensor, manager.labels(entry.name)), timings
