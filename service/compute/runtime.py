"""ONNX Runtime sessions: providers, session options, warm-up and the on-host calibration."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.compute import threads
from service.compute.calibration import Calibration
from service.core.registry import ModelEntry
from service.core.settings import Settings

log = logging.getLogger("convzoo.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class RuntimeUnavailable(Exception):
    """The model cannot run here; the message is safe to show to clients."""


@dataclass
class LoadedModel:
    session: ort.InferenceSession
    input_name: str
    output_name: str
    input_dtype: np.dtype[np.generic]
    sample_shape: tuple[int, ...]  # one image, CHW
    max_batch_size: int  # the graph's own batch limit (fixed batch axis) or the configured one
    providers: list[str]
    calibration: Calibration | None = None
    bind_device: str | None = None  # "cuda": run through IOBinding on that device

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One synchronous forward pass; the caller picks the thread."""
        feed = batch if batch.dtype == self.input_dtype else batch.astype(self.input_dtype)
        if self.bind_device is not None:
            return self._run_bound(feed, self.bind_device)
        (out,) = self.session.run([self.output_name], {self.input_name: feed})
        return np.asarray(out, dtype=np.float32)

    def _run_bound(self, feed: np.ndarray, device: str) -> np.ndarray:
        # IOBinding: the batch is copied to the device once, the logits stay there until one copy back,
        # instead of ORT's own staging copies around a plain run().
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(feed, device, 0))
        binding.bind_output(self.output_name, device)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)


# A minimal ONNX graph (y = Identity(x), one float; opset 17), serialized: the service does not depend on
# the onnx package.
_IDENTITY_ONNX = (
    b'\x08\x08\x12\x00::\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x04initZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
    b"\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\x11"
)


def initialise_runtime(settings: Settings) -> None:
    """Build and run one trivial CPU session, so that ONNX Runtime's one-time set-up (environment, kernel
    registries, the shared thread pool where there is one) happens before the memory baseline is taken
    instead of inside the first model's load."""
    plan = threads.for_settings(settings)
    log.info("intra-op threads: %d, pool: %s (%s)", plan.intra_op_threads, plan.pool, plan.reason)
    session = ort.InferenceSession(_IDENTITY_ONNX, _session_options(settings, "disable"), providers=[CPU])
    session.run(None, {"x": np.ones(1, dtype=np.float32)})


def requested_providers(choice: str) -> list[str]:
    """The provider list for a `providers` setting; an explicit `cuda` that is missing raises."""
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if choice == "cuda":
        if CUDA not in available:
            raise RuntimeUnavailable(
                "CONVZOO_PROVIDERS=cuda but the CUDA execution provider is not available "
                "(install onnxruntime-gpu and a CUDA driver, or use auto/cpu)"
            )
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def _session_options(settings: Settings, level: str) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    threads.apply(opts, threads.for_settings(settings), settings.inter_op_threads)
    opts.graph_optimization_level = _OPT_LEVELS[level]
    # Off: a run's activations are freed after it, so a loaded model costs what its load measured.
    opts.enable_cpu_mem_arena = settings.cpu_mem_arena
    opts.log_severity_level = 3  # errors only: ORT's warnings are not ours to print per request
    return opts


def _cache_file(settings: Settings, entry: ModelEntry, provider: str) -> Path | None:
    if settings.optimized_model_cache_dir is None or entry.artifact.sha256 is None:
        return None
    tag = "cuda" if provider == CUDA else "cpu"
    name = f"{entry.name}-{entry.artifact.sha256[:16]}-{settings.graph_optimization}-{tag}.onnx"
    return settings.optimized_model_cache_dir / name


def create_session(path: Path, entry: ModelEntry, settings: Settings) -> ort.InferenceSession:
    """An InferenceSession with the configured providers and options, using the optimised-model cache."""
    providers = requested_providers(settings.providers)
    cache = _cache_file(settings, entry, providers[0])
    if cache is not None and cache.is_file():
        # Already optimised for this provider: loading it skips the graph optimisation.
        session = ort.InferenceSession(str(cache), _session_options(settings, "disable"), providers=providers)
    else:
        opts = _session_options(settings, settings.graph_optimization)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            opts.optimized_model_filepath = str(cache)
        session = ort.InferenceSession(str(path), opts, providers=providers)
    in_use = session.get_providers()
    if settings.providers == "cuda" and CUDA not in in_use:
        raise RuntimeUnavailable("CONVZOO_PROVIDERS=cuda but ONNX Runtime could not start the CUDA provider")
    log.info("model %s runs on %s", entry.name, ", ".join(in_use))
    return session


def load_model(path: Path, entry: ModelEntry, settings: Settings, *, max_batch_size: int) -> LoadedModel:
    """Build the session, check its signature against the registry entry and warm it up (batch 1)."""
    session = create_session(path, entry, settings)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise RuntimeUnavailable("the artifact does not have one input and an output")
    shape = inputs[0].shape
    batch_axis = shape[0] if shape else None
    sample_shape = tuple(int(d) for d in entry.input.shape[1:] if isinstance(d, int))
    if len(sample_shape) != len(entry.input.shape) - 1 or len(shape) != len(entry.input.shape):
        raise RuntimeUnavailable("the artifact's input shape does not match the registry")
    graph_limit = batch_axis if isinstance(batch_axis, int) and batch_axis > 0 else None
    model = LoadedModel(
        session=session,
        input_name=inputs[0].name,
        output_name=outputs[0].name,
        input_dtype=np.dtype(np.float16 if entry.input.dtype == "float16" else np.float32),
        sample_shape=sample_shape,
        max_batch_size=min(max_batch_size, graph_limit) if graph_limit else max_batch_size,
        providers=session.get_providers(),
        bind_device="cuda" if session.get_providers()[0] == CUDA else None,
    )
    out = model.run(np.zeros((1, *sample_shape), dtype=np.float32))  # warm-up
    if out.shape != (1, entry.num_classes):
        raise RuntimeUnavailable(
            f"the artifact outputs shape {list(out.shape)}, expected [1, {entry.num_classes}]"
        )
    return model


def calibrate(
    model: LoadedModel,
    *,
    seconds: float,
    batch_size: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Calibration | None:
    """Measure batch-1 p50/p99 latency and throughput at `batch_size` (at most the model's max batch), in
    about `seconds`; None when `should_stop` says so first (the model is being unloaded)."""
    if seconds <= 0:
        return None
    one = np.random.default_rng(0).standard_normal((1, *model.sample_shape)).astype(np.float32)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds / 2
    while len(latencies) < 5 or (time.perf_counter() < stop and len(latencies) < 2000):
        if should_stop():
            return None
        t0 = time.perf_counter_ns()
        model.run(one)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
    size = min(batch_size or model.max_batch_size, model.max_batch_size)
    batch = np.repeat(one, size, axis=0)
    runs, images, start = 0, 0, time.perf_counter()
    stop = start + seconds / 2
    while runs < 1 or time.perf_counter() < stop:
        if should_stop():
            return None
        model.run(batch)
        runs += 1
        images += len(batch)
    elapsed = time.perf_counter() - start
    arr = np.asarray(latencies)
    return Calibration(
        p50_ms=float(np.percentile(arr, 50)),
        p99_ms=float(np.percentile(arr, 99)),
        throughput_ips=images / elapsed,
        batch_size=size,
        samples=len(latencies),
        provider=model.providers[0],
    )
