"""What the protocols (REST, /v2, gRPC, the page) need of the models, in one place: the service process's
model manager provides it in process, and a front process's link to that manager provides it over the
link (service/fronts/remote.py). Every route is written against these, so each has one implementation
whichever process runs it. Nothing here imports ONNX Runtime: front processes never load it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from service.core.registry import ModelEntry, Registry, Serving
from service.models.batcher import InferTimings


class Batching(Protocol):
    """How a model's requests are batched."""

    @property
    def max_batch_size(self) -> int: ...
    @property
    def max_queue_delay_us(self) -> int: ...
    @property
    def max_queue_size(self) -> int: ...


class CalibrationFacts(Protocol):
    """A model's latency measured on this host by the service."""

    @property
    def p50_ms(self) -> float: ...
    @property
    def p99_ms(self) -> float: ...
    @property
    def throughput_ips(self) -> float: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def samples(self) -> int: ...
    @property
    def provider(self) -> str: ...


class SessionFacts(Protocol):
    """What a loaded model's session tells of itself."""

    @property
    def providers(self) -> list[str]: ...
    @property
    def max_batch_size(self) -> int: ...


class ModelStatus(Protocol):
    """One model's state, as the API shows it."""

    @property
    def entry(self) -> ModelEntry: ...
    @property
    def policy(self) -> Batching: ...
    @property
    def status(self) -> str: ...  # available, loading, loaded, unavailable
    @property
    def reason(self) -> str | None: ...
    @property
    def build_command(self) -> str | None: ...  # set while its artifact is not there: what makes it
    @property
    def model(self) -> SessionFacts | None: ...  # while loaded
    @property
    def calibration(self) -> CalibrationFacts | None: ...
    @property
    def load_s(self) -> float | None: ...
    @property
    def loaded_at(self) -> dt.datetime | None: ...
    @property
    def loads(self) -> int: ...
    @property
    def memory_bytes(self) -> int | None: ...
    @property
    def load_peak_bytes(self) -> int | None: ...
    @property
    def memory_estimate_bytes(self) -> int: ...
    @property
    def activation_fixed_bytes(self) -> int: ...  # a batch's activations: fixed + per image
    @property
    def activation_per_image_bytes(self) -> int: ...
    @property
    def activation_source(self) -> str: ...  # measured (calibration), first-run (after a load), estimated


class Models(Protocol):
    """The models, their states and their inference."""

    @property
    def registry(self) -> Registry: ...
    @property
    def default(self) -> str: ...
    @property
    def provider(self) -> str: ...  # the execution provider a model gets when it loads

    def host_description(self) -> dict[str, object]:
        """This host and the threads the models' sessions run (GET /models' `host`)."""
        ...

    async def refresh(self) -> None:
        """Bring the states up to date before a request reads them (a no-op in process)."""
        ...

    async def learn(self, name: str) -> None:
        """Before an inference request looks `name` up: where the states are a copy (a front's), one that
        does not know the name is brought up to date first, as the service may have reloaded a registry
        that has it; bounded in rate, as the names are the client's (a no-op in process)."""
        ...

    @property
    def generation(self) -> int: ...  # counts the registries taken in (a reload adds one)

    def states(self) -> Sequence[ModelStatus]: ...  # one per model: the version `model=NAME` gets
    def version_states(self, model: str) -> Sequence[ModelStatus]: ...  # every version, as NAME@VERSION
    def state(self, name: str) -> ModelStatus: ...  # raises UnknownModel
    def entry(self, name: str) -> ModelEntry: ...  # raises UnknownModel
    def labels(self, name: str) -> list[str]: ...
    def ready(self) -> tuple[bool, str]: ...
    def readiness(self) -> tuple[bool, str, dict[str, list[str]]]: ...

    async def ensure_loaded(self, name: str) -> object:
        """Load the model if it is not (waiting within its deadline); raises ModelUnavailable."""
        ...

    async def unload_model(self, name: str) -> bool:
        """Unload the model now (an admin's request); False when it is in use or pinned."""
        ...

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float
    ) -> tuple[np.ndarray, InferTimings]:
        """N preprocessed samples through the batcher of the version `name` gets (NAME: by its policy,
        NAME@VERSION: that one); logits N x classes, the timings naming the version."""
        ...

    def rollout_state(self, model: str) -> tuple[Serving, dict[str, str]]:
        """The policy the model's traffic follows now; the versions that failed to roll out, and why."""
        ...

    async def rollout(self, name: str) -> dict[str, Any]:
        """The rollout's figures: requests per version, the shadow's comparisons (service/rollouts/rollout.py)."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Re-read the registry and roll out the difference (as SIGHUP does)."""
        ...


class ModelStatistics(Protocol):
    """The /v2 statistics extension's figures."""

    def model_stat(self, name: str, version: str) -> dict[str, Any]: ...


class LiveLatencies(Protocol):
    """Recent live latencies, for model=auto and the frontier."""

    def p50_ms(self, model: str) -> tuple[float, int] | None: ...
