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
