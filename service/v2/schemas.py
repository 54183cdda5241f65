"""The JSON part of an inference request, validated field by field."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

# `$parameter = $string | $number | $boolean`; bool before int so that `true` stays a bool.
Parameter = StrictBool | StrictInt | StrictFloat | StrictStr
Parameters = dict[str, Parameter]


class _Lenient(BaseModel):
    # Clients add fields of their own (e.g. "model_name" in the request); the protocol ignores them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class RequestInput(_Lenient):
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(_Lenient):
    name: StrictStr
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(_Lenient):
    id: StrictStr | None = None
    parameters: Parameters = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def describe(exc: ValidationError) -> str:
    """One line per problem, located by its JSON path: `inputs.0.shape: Input should be a valid list`."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# ---- response bodies (JSON), one model per body, so that the /v2 OpenAPI documents every one ---------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]  # -1 for a dynamic axis


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ConfigTensor(BaseModel):
    name: str
    data_type: str
    dims: list[int]


class DynamicBatching(BaseModel):
    max_queue_delay_microseconds: int


class ModelConfig(BaseModel):
    """Triton's model configuration, as far as it describes a registry model."""

    name: str
    platform: str
    backend: str
    version_policy: dict[str, dict[str, int]]
    max_batch_size: int
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    dynamic_batching: DynamicBatching


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: str  # READY, LOADING or UNAVAILABLE
    reason: str | None = None  # absent for a ready model


class Duration(BaseModel):
    count: int
    ns: int


class InferenceStats(BaseModel):
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    cache_hit: Duration
    cache_miss: Duration


class BatchStats(BaseModel):
    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


class ModelStat(BaseModel):
    name: str
    version: str
    last_inference: int  # ms since the epoch
    inference_count: int
    execution_count: int
    inference_stats: InferenceStats
    batch_stats: list[BatchStats]


class ModelStatistics(BaseModel):
    model_stats: list[ModelStat]


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Parameter] | None = None
    data: list[Any] | None = None  # absent when the output is sent as binary data


class InferenceResponse(BaseModel):
    """The JSON part of an inference response (the binary data extension appends the tensors)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Parameter] | None = None
    outputs: list[ResponseOutput]
