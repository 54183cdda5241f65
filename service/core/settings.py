"""Service configuration: environment variables prefixed `CONVZOO_`, validated at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Providers = Literal["auto", "cpu", "cuda"]
GraphOptimization = Literal["disable", "basic", "extended", "all"]
IntraOpPool = Literal["per_model", "shared"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """Every setting of the service; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="CONVZOO_", extra="forbid", frozen=True)

    # Network
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # Models
    registry_path: Path = Path("registry.yaml")
    models_dir: Path = Path("models")
    preload: Annotated[list[str] | None, NoDecode] = None  # None: the registry's default model
    allow_random_weights: bool = False
    memory_budget_mb: float = Field(default=2048.0, gt=0)

    # ONNX Runtime
    providers: Providers = "auto"
    # 0: the physical cores among the CPUs this process may use (affinity, cgroup quota); docs/threads.md
    intra_op_threads: int = Field(default=0, ge=0)
    inter_op_threads: int = Field(default=1, ge=0)
    intra_op_spinning: bool = False  # idle ORT threads busy-wait; off: docs/worker-model.md
    # with more than one intra-op thread: a pool per loaded model, or ORT's one global pool for all
    # (which always spins); docs/threads.md
    intra_op_pool: IntraOpPool = "per_model"
    graph_optimization: GraphOptimization = "all"
    optimized_model_cache_dir: Path | None = None
    calibration_s: float = Field(default=0.5, ge=0)  # 0 disables calibration

    # Requests
    max_upload_mb: float = Field(default=16.0, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    # false: every entry's `reduce_at_decode` off, every upload decoded at full size (docs/preprocessing.md)
    reduce_at_decode: bool = True
    max_files_per_request: int = Field(default=64, ge=1)
    request_timeout_s: float = Field(default=10.0, gt=0)

    # Dynamic batching (a registry entry's `batching` overrides the first two)
    max_batch_size: int = Field(default=32, ge=1)
    max_queue_delay_us: int = Field(default=1000, ge=0)
    max_queue_size: int = Field(default=256, ge=1)
    inference_threads: int = Field(default=1, ge=1)  # per model; docs/worker-model.md
    # cut a batch at once while no batch of the model runs; the delay applies only while one does
    batch_when_idle: bool = True

    # Process
    workers: int = Field(default=1, ge=1)  # uvicorn worker processes; docs/worker-model.md
    # processes doing HTTP and preprocessing beside the service's, which alone holds the models (with
    # workers=1); None: one per core beside the service's, at most 3 (docs/architecture.md, Processes)
    front_processes: int | None = Field(default=None, ge=0)
    log_level: LogLevel = "info"
    graceful_shutdown_s: float = Field(default=10.0, ge=0)
    preprocess_threads: int = Field(default=2, ge=1)

    # Model lifecycle: parallel loads, memory, calibration (docs/model-lifecycle.md)
    load_threads: int = Field(default=2, ge=1)  # loads of different models run in parallel, up to this
    cpu_mem_arena: bool = False  # ORT's CPU arena keeps every run's peak activations for good
    calibration_batch_size: int = Field(default=8, ge=1)  # the throughput run's batch: bounds its memory
    background_calibration: bool = True  # after start-up, calibrate every available model, one at a time
    # running batches' activations count against the memory budget: a batch that would overrun it is cut
    # smaller or waits (docs/model-lifecycle.md). Off by default: under heavy churn it held the small
    # model's p99 at ~5x and cost 20-40% of the throughput for a peak RSS still 17-21 MiB over (measured
    # there); on for a hard memory limit, where an OOM kill costs more than waiting
    batch_memory: bool = False

    # Hostile inputs and connections (docs/security.md)
    preprocess_large_threads: int = Field(default=1, ge=1)  # processes for images over the next setting
    preprocess_large_pixels: int = Field(default=2_000_000, ge=1)
    preprocess_process_memory_mb: float = Field(default=768.0, ge=0)  # address space of each; 0: no limit
    keep_alive_s: float = Field(default=5.0, gt=0)  # an idle connection between requests is closed
    header_timeout_s: float = Field(default=10.0, gt=0)  # a request head must be complete within this
    body_timeout_s: float = Field(default=15.0, gt=0)  # a body that sends nothing this long is cut off
    max_header_bytes: int = Field(default=32_768, ge=1024)  # a longer request head: 431
    max_connections: int = Field(default=1000, ge=1)  # open connections; beyond: 503 (and below the fd limit)

    # Who is calling: API keys, quotas, TLS (docs/auth.md)
    api_keys_file: Path | None = None  # None (or empty): no keys, every request served (loopback by default)
    metrics_open: bool = False  # with keys: GET /metrics without a key (else the `read` scope)
    auth_failures_per_s: float = Field(default=1.0, gt=0)  # failed attempts per source address, after
    auth_failures_burst: int = Field(default=20, ge=1)  # this many at once; beyond: 429
    tls_cert_file: Path | None = None  # PEM certificate chain: HTTPS and gRPC over TLS
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # PEM CA bundle: clients must present a certificate it signed

    # gRPC (Open Inference Protocol) and tracing: docs/v2.md
    grpc_port: int | None = Field(default=None, ge=1, le=65535)  # None (or empty): no gRPC server
    otlp_endpoint: str | None = None  # None (or empty): no tracing, at no cost

    # What the models see (docs/monitoring.md): per-answer out-of-distribution scores, drift over a
    # sliding window of each model version's answers, payload sampling (off while sample_dir is None)
    monitor: bool = True
    monitor_window: int = Field(default=200, ge=10)  # answers per model version in the sliding window
    monitor_min_answers: int = Field(default=100, ge=1)  # a window is judged for drift from this many
    captured_references_dir: Path | None = None  # None: models_dir/references
    sample_dir: Path | None = None  # None: no payload sampling
    sample_share: float = Field(default=0.01, ge=0, le=1)  # of the requests answered
    sample_images: bool = False  # the image too, base64, where a request has one
    sample_file_mb: float = Field(default=10.0, gt=0)  # a file is rotated at this size
    sample_max_mb: float = Field(default=100.0, gt=0)  # all sample files together, the oldest removed first

    @field_validator(
        "grpc_port",
        "otlp_endpoint",
        "front_processes",
        "api_keys_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "captured_references_dir",
        "sample_dir",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("preload", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        # CONVZOO_PRELOAD=a,b or a JSON list; an empty string preloads nothing.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [n.strip() for n in text.split(",") if n.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("CONVZOO_TLS_CERT_FILE and CONVZOO_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "CONVZOO_TLS_CLIENT_CA_FILE needs CONVZOO_TLS_CERT_FILE and CONVZOO_TLS_KEY_FILE"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_mb * 1_000_000)


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """CONVZOO_* variables that name no setting (typos are otherwise silently ignored)."""
    known = {f"CONVZOO_{name.upper()}" for name in Settings.model_fields}
    return sorted(k for k in environ if k.upper().startswith("CONVZOO_") and k.upper() not in known)
