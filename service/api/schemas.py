"""The success bodies of the HTTP API, one model per body, so that /openapi.json documents every one.

Field order is the order of the JSON members. A member that is absent unless it applies (e.g. `selection`
of /classify) has a default and is left unset: those routes answer with `response_model_exclude_unset`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from service.api.selection import CostAxis, LatencySource
from service.core.registry import (
    Artifact,
    Host,
    InputSpec,
    Latency,
    Parity,
    Preprocessing,
    Provenance,
    Quantization,
    Serving,
)
from service.images.postprocess import Prediction

__all__ = ["Prediction"]

ModelStatus = Literal["available", "loaded", "unavailable"]  # the contract's three states


# ---- /health ---------------------------------------------------------------------------------------------


class Live(BaseModel):
    status: Literal["live"] = "live"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    default: str
    detail: str
    loaded: list[str]  # the models readiness waits for: the default and every preload
    loading: list[str]
    unavailable: list[str]
    # set when the service listens beyond loopback without API keys (docs/auth.md)
    exposure: str | None = None
    # versions that failed to roll out at the last reload, with why: their models serve the version before
    rollout_failed: list[str] = []


# ---- /classify -------------------------------------------------------------------------------------------


class ImageResult(BaseModel):
    filename: str | None  # None for a raw image body
    width: int  # the upload's own size, upright, whatever size it was decoded at (docs/preprocessing.md)
    height: int
    predictions: list[Prediction]
    # set where the model version has a reference (docs/monitoring.md): the image's out-of-distribution
    # score (0..1, its rank among the reference's own images) and whether it passes the reference's threshold
    unusual: bool | None = None
    ood_score: float | None = None


class ClassifyTiming(BaseModel):
    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float


class SelectionFailure(BaseModel):
    constraint: str
    detail: str


class Considered(BaseModel):
    name: str
    top1: float | None
    accuracy_source: str | None
    latency_ms: float | None
    latency_source: LatencySource | None
    size_mb: float | None
    status: str
    fits: bool
    failed: list[SelectionFailure]


class SelectionReport(BaseModel):
    """How `model=auto` chose: the constraints, the reason, every model considered."""

    chosen: str
    dataset: str
    constraints: dict[str, float | str]
    reason: str
    considered: list[Considered]


class ClassifyResponse(BaseModel):
    model: str
    version: str
    selection: SelectionReport | None = None  # present with model=auto only
    results: list[ImageResult]
    timing_ms: ClassifyTiming


# ---- /compare --------------------------------------------------------------------------------------------


class CompareImage(BaseModel):
    filename: str | None
    width: int  # the upload's own size, upright, as in /classify
    height: int


class CompareTiming(BaseModel):
    load: float
    preprocess: float
    queue: float
    inference: float
    total: float


class CompareAnswer(BaseModel):
    model: str
    version: str
    top1: float | None  # the model's registry accuracy, beside its answer
    predictions: list[Prediction]
    timing_ms: CompareTiming


class CompareErrorDetail(BaseModel):
    status: int
    title: str
    detail: str


class CompareFailure(BaseModel):
    """A model that could not answer: the problem it would have answered alone."""

    model: str
    error: CompareErrorDetail


class AgreedTop1(BaseModel):
    index: int
    label: str
    models: list[str]


class PairAgreement(BaseModel):
    models: list[str]
    same_top1: bool
    topk_overlap: float  # Jaccard of the two top-k sets


class Agreement(BaseModel):
    answered: int
    top1: AgreedTop1 | None
    share_top1: int
    unanimous: bool
    distinct_top1: int | None = None  # absent when no model answered
    pairwise_top1_agreement: float | None = None  # absent when no model answered; null with one
    pairwise: list[PairAgreement]


class CompareTotals(BaseModel):
    decode: float
    total: float


class CompareResponse(BaseModel):
    image: CompareImage
    models: list[CompareAnswer | CompareFailure]
    agreement: Agreement
    timing_ms: CompareTotals
    # the models grouped by label set, where they classify into more than one: then no agreement is
    # computed across them (`agreement` has no top-1 and no pairs)
    label_sets_differ: list[list[str]] | None = None


# ---- /models ---------------------------------------------------------------------------------------------


class ModelSummary(BaseModel):
    """One row of the comparison table; `GET /models?sort=` sorts by any of these fields."""

    name: str
    version: str
    dataset: str
    architecture: str
    num_classes: int
    input_shape: list[int | str]
    params: int
    depth: int
    gflops: float
    size_mb: float | None
    top1: float | None
    top5: float | None
    accuracy_source: str | None
    weights: str
    status: ModelStatus
    status_reason: str | None
    latency_ms: float | None  # measured here by the service at load time, p50 at batch 1
    throughput_ips: float | None
    latency_source: str | None  # "calibration" once measured here
    registry_latency_ms: float | None  # the registry's p50, measured on the host named below
    registry_throughput_ips: float | None
    registry_latency_host: str | None
    memory_bytes: int | None  # measured growth of the process when the model loaded
    memory_source: Literal["measured", "estimated"]
    memory_estimate_bytes: int  # what the memory budget counts: measured, else estimated from the file
    load_peak_bytes: int | None  # the process's growth at its peak while the model loaded
    # a running batch's activations, counted against the memory budget: fixed + per image
    activation_fixed_bytes: int
    activation_per_image_bytes: int
    # measured (fixed + per image, at calibration), first-run (one batch-1 run after the load), estimated
    activation_source: Literal["measured", "first-run", "estimated"]
    last_load_s: float | None
    last_loaded_at: str | None  # ISO 8601, UTC
    loads: int
    rollout: RolloutSummary | None = None  # a model with several versions: which serve, and how each is


class VersionStatus(BaseModel):
    version: str
    role: Literal["stable", "canary", "shadow"] | None  # as the policy serves it now; None: pinned only
    status: ModelStatus | Literal["loading"]
    reason: str | None
    error: str | None = None  # why it failed to roll out at the last reload (its model serves the one before)


class RolloutSummary(BaseModel):
    """The policy traffic follows now, and every version's state (docs/rollouts.md)."""

    serving: Serving
    registry: (
        Serving  # the policy the registry asks for: differs from `serving` while a version loads or failed
    )
    versions: list[VersionStatus]


class Latencies(BaseModel):
    p50: float | None
    p99: float | None


class ShadowComparison(BaseModel):
    """A shadow version's answers against the primary's, on the same live requests."""

    primary: str
    shadow: str
    requests: int
    images: int
    agreement: float | None  # top-1 agreement over images
    agreement_interval: list[float]  # 95% Wilson score interval
    confidence_delta_mean: float | None  # shadow minus primary probability of the primary's top-1 class
    confidence_delta_abs_mean: float | None
    primary_latency_ms: Latencies  # queue and inference, each version's own, over recent comparisons
    shadow_latency_ms: Latencies


class RolloutReport(RolloutSummary):
    """GET /models/{name}/rollout: versions, policies, requests per version, the shadow's comparisons."""

    model: str
    served: dict[str, int]  # requests that followed the policy, by the version that answered
    pinned: dict[str, int]  # requests that named NAME@VERSION
    shadow: list[ShadowComparison]
    shadow_shed: dict[str, int]  # copies not made: the shadow had a batch's worth waiting, or was not loaded
    shadow_failed: dict[str, int]


class ServingHost(Host):
    """The host serving now, and how its ONNX Runtime sessions use its CPUs (docs/threads.md)."""

    usable_cpus: float  # what the process may use: its affinity and its cgroup's CPU quota
    cpu_source: Literal["cgroup", "affinity", "host"]  # which limit that is ("host": neither)
    thread_pool: Literal["shared", "per_model", "none"]  # "none": one thread, each run on its caller
    spinning: bool  # whether idle intra-op threads busy-wait
    threads_reason: str  # why this many threads, in words


class ModelList(BaseModel):
    default: str
    host: ServingHost
    models: list[ModelSummary]


class AccuracyInfo(BaseModel):
    split: str | None
    samples: int | None
    date: str | None  # ISO 8601


class CalibrationInfo(BaseModel):
    p50_ms: float
    p99_ms: float
    throughput_ips: float
    batch_size: int
    samples: int
    provider: str


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_queue_delay_us: int
    max_queue_size: int


class ModelDetail(ModelSummary):
    paper: str
    input: InputSpec
    preprocessing: Preprocessing
    labels_count: int
    artifact: Artifact
    weights_source: str
    accuracy: AccuracyInfo
    parity: Parity | None
    provenance: Provenance | None
    registry_latency: Latency | None
    # a quantized variant: its FP32 source, calibration and what `parity` compares
    quantization: Quantization | None
    calibration: CalibrationInfo | None
    providers: list[str] | None  # ONNX Runtime's, while loaded
    batching: BatchingInfo


class LabelList(BaseModel):
    labels: list[str]


class FrontierPoint(BaseModel):
    name: str
    cost: float
    top1: float | None
    accuracy_source: str | None
    latency_source: LatencySource | None
    status: str


class ParetoResponse(BaseModel):
    dataset: str
    x: CostAxis
    unit: str
    frontier: list[FrontierPoint]
    off_frontier: list[str]


# ---- /models/{name}/monitor ------------------------------------------------------------------------------


class Spread(BaseModel):
    mean: float
    p5: float
    p50: float
    p95: float


class ClassShare(BaseModel):
    index: int
    label: str
    share: float  # of the window's answers with this top-1 class
    reference_share: float | None  # of the reference's


class InputStatistics(BaseModel):
    width: Spread | None
    height: Spread | None
    aspect_ratio: Spread | None
    brightness: Spread | None  # mean pixel value of the model's input, 0..1
    grey_share: float | None  # uploads without colour
    rotated_share: float | None  # uploads turned upright by their EXIF orientation


class MonitorWindow(BaseModel):
    size: int  # the window's capacity
    answers: int  # answers in it now
    unusual_share: float | None  # None without a reference
    classes: list[ClassShare]
    confidence: Spread | None
    entropy: Spread | None
    inputs: InputStatistics


class ReferenceSummary(BaseModel):
    source: str
    created: str
    samples: int
    ood_fpr: float
    ood_threshold: float
    class_prior: list[float]


class DriftStatistic(BaseModel):
    name: str  # psi_class_prior, psi_confidence, psi_brightness, ks_entropy
    value: float
    threshold: float
    exceeded: bool
    p_value: float | None = None


class Drift(BaseModel):
    judged: bool  # false without a reference or below min_answers in the window
    min_answers: int
    drifting: bool
    statistics: list[DriftStatistic]


class CaptureState(BaseModel):
    samples: int
    collected: int
    error: str | None = None


class MonitorReport(BaseModel):
    """What the model version sees: its sliding window, its reference, the drift between them."""

    model: str
    version: str
    answers: int  # answered images since the service started
    unusual: int  # of which flagged unusual
    window: MonitorWindow
    reference: ReferenceSummary | None
    drift: Drift
    capture: CaptureState | None  # a reference being captured from traffic
