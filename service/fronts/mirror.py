"""The models' state as the service sends it to a front process (`snapshot`) and as the front reads it
back (`Mirror`): one module for both ends of one format.

A front asks for a snapshot before each request that reads state (service/api/deps.py), so what it
answers is as current as the service's own answer would be.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.compute.calibration import Calibration
from service.core.registry import ModelEntry, Registry, Serving, parse_registry
from service.interfaces import LiveLatencies, Models, ModelStatistics, ModelStatus
from service.rollouts import versions


def _state(s: ModelStatus) -> dict[str, Any]:
    cal = s.calibration
    policy = s.policy
    return {
        "name": s.entry.name,
        "version": s.entry.version,
        "status": s.status,
        "reason": s.reason,
        "build_command": s.build_command,
        "policy": [policy.max_batch_size, policy.max_queue_delay_us, policy.max_queue_size],
        "model": None if s.model is None else [list(s.model.providers), s.model.max_batch_size],
        "calibration": None
        if cal is None
        else [cal.p50_ms, cal.p99_ms, cal.throughput_ips, cal.batch_size, cal.samples, cal.provider],
        "load_s": s.load_s,
        "loaded_at": s.loaded_at.isoformat() if s.loaded_at is not None else None,
        "loads": s.loads,
        "memory_bytes": s.memory_bytes,
        "load_peak_bytes": s.load_peak_bytes,
        "memory_estimate_bytes": s.memory_estimate_bytes,
        "activations": [s.activation_fixed_bytes, s.activation_per_image_bytes, s.activation_source],
    }


def _rollout(models: Models, model: str) -> list[Any]:
    policy, errors = models.rollout_state(model)
    return [policy.model_dump(mode="json"), errors]


def snapshot(
    models: Models, statistics: ModelStatistics, recent: LiveLatencies, generation: int | None = None
) -> dict[str, Any]:
    """In the service: everything a front's routes read of the models, as JSON-ready data; the registry
    itself when the front's (`generation`) is not the service's (it reloaded since)."""
    ok, reason, lists = models.readiness()
    states = models.states()
    several = [m.name for m in models.registry.models if m.versions]
    extra: dict[str, Any] = {}
    if generation is not None and generation != models.generation:
        extra = {"generation": models.generation, "registry": models.registry.model_dump(mode="json")}
    return {
        **extra,
        "versions": [_state(v) for m in several for v in models.version_states(m)],
        "serving": {m.name: _rollout(models, m.name) for m in models.registry.models if m.versions},
        "provider": models.provider,
        "host": models.host_description(),
        "readiness": [ok, reason, lists],
        "states": [_state(s) for s in states],
        # by version key: a version's batches are counted under it (service/rollouts/versions.py)
        "statistics": {
            k: statistics.model_stat(k, e.version) for k, e in versions.entries(models.registry).items()
        },
        "recent": {s.entry.name: p for s in states if (p := recent.p50_ms(s.entry.name)) is not None},
    }


@dataclass(frozen=True)
class Policy:
    max_batch_size: int
    max_queue_delay_us: int
    max_queue_size: int


@dataclass(frozen=True)
class Session:
    providers: list[str]
    max_batch_size: int


@dataclass(frozen=True)
class State:
    """A model's state as the service last reported it (service/interfaces.py, ModelStatus)."""

    entry: ModelEntry
    policy: Policy
    status: str
    reason: str | None
    build_command: str | None
    model: Session | None
    calibration: Calibration | None
    load_s: float | None
    loaded_at: dt.datetime | None
    loads: int
    memory_bytes: int | None
    load_peak_bytes: int | None
    memory_estimate_bytes: int
    activation_fixed_bytes: int
    activation_per_image_bytes: int
    activation_source: str

    @classmethod
    def read(cls, entry: ModelEntry, raw: dict[str, Any]) -> State:
        model, cal, loaded_at = raw["model"], raw["calibration"], raw["loaded_at"]
        return cls(
            entry=entry,
            policy=Policy(*raw["policy"]),
            status=raw["status"],
            reason=raw["reason"],
            build_command=raw["build_command"],
            model=Session(*model) if model is not None else None,
            calibration=Calibration(*cal) if cal is not None else None,
            load_s=raw["load_s"],
            loaded_at=dt.datetime.fromisoformat(loaded_at) if loaded_at is not None else None,
            loads=raw["loads"],
            memory_bytes=raw["memory_bytes"],
            load_peak_bytes=raw["load_peak_bytes"],
            memory_estimate_bytes=raw["memory_estimate_bytes"],
            activation_fixed_bytes=raw["activations"][0],
            activation_per_image_bytes=raw["activations"][1],
            activation_source=raw["activations"][2],
        )

    @property
    def is_loaded(self) -> bool:
        return self.status == "loaded"


class Mirror:
    """In a front: the last snapshot, read back against the registry both processes load."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.generation = 0  # the service's count of registries taken in, as of this front's registry
        self.serving: dict[str, tuple[Serving, dict[str, str]]] = {}
        self.provider = "CPUExecutionProvider"
        self.host: dict[str, object] = {}
        self.readiness: tuple[bool, str, dict[str, list[str]]] = (False, "not yet linked", {})
        self.states: dict[str, State] = {}
        self._statistics: dict[str, dict[str, Any]] = {}
        self._recent: dict[str, tuple[float, int]] = {}

    def update(self, raw: dict[str, Any]) -> None:
        if "registry" in raw:  # the service reloaded: its registry, as it applies it
            self.registry = parse_registry(raw["registry"])
            self.generation = int(raw["generation"])
        entries = {m.name: m for m in self.registry.models}

        def entry(name: str, version: str) -> ModelEntry:
            own = entries.get(name)
            if own is not None and own.version == version:
                return own
            return versions.named_entry(self.registry, name, version)

        self.provider = str(raw["provider"])
        self.host = dict(raw["host"])
        ok, reason, lists = raw["readiness"]
        self.readiness = (bool(ok), str(reason), {k: list(v) for k, v in lists.items()})
        self.states = {
            s["name"]: State.read(entry(s["name"], s["version"]), s)
            for s in [*raw["states"], *raw["versions"]]
        }
        self.serving = {m: (Serving.model_validate(p), dict(e)) for m, (p, e) in raw["serving"].items()}
        self._statistics = raw["statistics"]
        self._recent = {name: (float(p[0]), int(p[1])) for name, p in raw["recent"].items()}

    def rollout_state(self, model: str) -> tuple[Serving, dict[str, str]]:
        found = self.serving.get(model)
        return found if found is not None else (self.registry.get(model).policy, {})

    def ordered(self) -> Sequence[State]:
        return [self.states[m.name] for m in self.registry.models if m.name in self.states]

    def model_stat(self, name: str, version: str) -> dict[str, Any]:
        stat = dict(self._statistics.get(name) or {})
        return {**stat, "name": name, "version": version} if stat else {"name": name, "version": version}

    def p50_ms(self, model: str) -> tuple[float, int] | None:
        return self._recent.get(model)
