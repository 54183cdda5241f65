"""What the API shows of a model: its row of the comparison table and its full description."""

from __future__ import annotations

from service.api.schemas import (
    AccuracyInfo,
    BatchingInfo,
    CalibrationInfo,
    ModelDetail,
    ModelList,
    ModelSummary,
    ServingHost,
)
from service.interfaces import Models, ModelStatus
from service.rollouts import versions


def _summary_fields(state: ModelStatus) -> dict[str, object]:
    e, m = state.entry, state.entry.metrics
    cal = state.calibration
    return {
        "name": e.name,
        "version": e.version,
        "dataset": e.dataset,
        "architecture": e.architecture,
        "num_classes": e.num_classes,
        "input_shape": list(e.input.shape),
        "params": m.params,
        "depth": m.depth,
        "gflops": m.gflops,
        "size_mb": m.size_mb,
        "top1": m.top1,
        "top5": m.top5,
        "accuracy_source": m.accuracy_source,
        "weights": e.weights.kind,
        # The contract's three states: a model being loaded is still `available`, with a reason.
        "status": "available" if state.status == "loading" else state.status,
        "status_reason": "loading" if state.status == "loading" else state.reason,
        "latency_ms": round(cal.p50_ms, 5) if cal else None,
        "throughput_ips": round(cal.throughput_ips, 1) if cal else None,
        **_lifecycle_fields(state),
    }


def _lifecycle_fields(state: ModelStatus) -> dict[str, object]:
    """Where the latency comes from, the registry's figure labelled with the host it was measured on,
    and the model's measured memory and last load."""
    cal, reg = state.calibration, state.entry.latency
    host = None
    if reg is not None:
        h = reg.host
        host = f"{h.gpu or h.cpu}, {h.provider}, {h.intra_op_threads} threads, {reg.date.isoformat()}"
    return {
        "latency_source": "calibration" if cal else None,
        "registry_latency_ms": reg.p50_ms if reg else None,
        "registry_throughput_ips": reg.throughput_ips if reg else None,
        "registry_latency_host": host,
        "memory_bytes": state.memory_bytes,
        "memory_source": "measured" if state.memory_bytes is not None else "estimated",
        "memory_estimate_bytes": state.memory_estimate_bytes,
        "load_peak_bytes": state.load_peak_bytes,
        "activation_fixed_bytes": state.activation_fixed_bytes,
        "activation_per_image_bytes": state.activation_per_image_bytes,
        "activation_source": state.activation_source,
        "last_load_s": round(state.load_s, 4) if state.load_s is not None else None,
        "last_loaded_at": state.loaded_at.isoformat() if state.loaded_at else None,
        "loads": state.loads,
    }


def summary(state: ModelStatus, manager: Models | None = None) -> ModelSummary:
    fields = _summary_fields(state)
    if manager is not None and manager.registry.get(state.entry.name).versions:
        fields["rollout"] = rollout_summary(manager, state.entry.name)
    return ModelSummary.model_validate(fields)


def rollout_summary(manager: Models, model: str) -> dict[str, object]:
    """The policy a model's traffic follows, the registry's, and each version's state (RolloutSummary)."""
    serving, errors = manager.rollout_state(model)
    roles = {serving.stable: "stable"}
    roles.update({s.version: r for r, s in (("canary", serving.canary), ("shadow", serving.shadow)) if s})
    return {
        "serving": serving,
        "registry": manager.registry.get(model).policy,
        "versions": [
            {
                "version": v.entry.version,
                "role": roles.get(v.entry.version),
                "status": v.status,
                "reason": v.reason,
                "error": errors.get(v.entry.version),
            }
            for v in manager.version_states(model)
        ],
    }


def model_list(manager: Models) -> ModelList:
    return ModelList(
        default=manager.default,
        host=ServingHost.model_validate(manager.host_description()),
        models=[summary(s, manager) for s in manager.states()],
    )


def detail(manager: Models, name: str) -> ModelDetail:
    state = manager.state(name)
    e = state.entry
    cal = state.calibration
    calibration = CalibrationInfo.model_validate(cal, from_attributes=True) if cal else None
    model = versions.split(name)[0]
    return ModelDetail.model_validate(
        {
            **_summary_fields(state),
            "rollout": rollout_summary(manager, model) if manager.registry.get(model).versions else None,
            "paper": e.paper,
            "input": e.input,
            "preprocessing": e.preprocessing,
            "labels_count": len(manager.labels(name)),
            "artifact": e.artifact,
            "weights_source": e.weights.source,
            "accuracy": AccuracyInfo(
                split=e.metrics.accuracy_split,
                samples=e.metrics.accuracy_samples,
                date=e.metrics.accuracy_date.isoformat() if e.metrics.accuracy_date else None,
            ),
            "parity": e.parity,
            "provenance": e.provenance,
            "registry_latency": e.latency,
            "quantization": e.quantization,
            "calibration": calibration,
            "providers": state.model.providers if state.model else None,
            "batching": BatchingInfo(
                # The loaded session's own batch limit, which a fixed batch axis lowers.
                max_batch_size=state.model.max_batch_size if state.model else state.policy.max_batch_size,
                max_queue_delay_us=state.policy.max_queue_delay_us,
                max_queue_size=state.policy.max_queue_size,
            ),
        }
    )
