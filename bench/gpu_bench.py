"""The prepared GPU benchmark: resnet50 on the CUDA provider, plain runs against IOBinding, FP32 against
FP16, then convzoo over HTTP with CONVZOO_PROVIDERS=cuda. Writes docs/bench-gpu.json and docs/bench-gpu.md.

Run through bench/gpu_bench.sh on a machine with an NVIDIA GPU and onnxruntime-gpu. Bounded: a few
seconds per point. Exits 2, measuring nothing, when ONNX Runtime offers no CUDA provider.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench import load, servers, workspace
from bench.images import photo_jpeg
from bench.load import Body
from service.compute.runtime import CUDA, LoadedModel, load_model
from service.core.registry import load_registry
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BATCHES = [1, 8, 32, 64]


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown NVIDIA GPU"


def _time(model: LoadedModel, batch: np.ndarray, seconds: float) -> dict[str, float]:
    for _ in range(3):
        model.run(batch)  # warm-up: cuDNN algorithm search, allocations
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < seconds and len(times) < 20000):
        t0 = time.perf_counter()
        model.run(batch)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    arr = np.asarray(times) * 1e3
    return {
        "images_per_s": len(batch) * len(times) / elapsed,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
    }


def raw(seconds: float, provider: str) -> dict[str, Any]:
    registry = load_registry(workspace.WORK / "registry.yaml")
    entry = registry.get(workspace.LARGE)
    settings = Settings(providers=provider, calibration_s=0, models_dir=workspace.WORK / "models")  # type: ignore[arg-type]
    fp32 = workspace.artifact(workspace.LARGE)
    built = load_registry(workspace.WORK / "built.yaml")
    half_entry = built.get(f"{workspace.LARGE}-fp16")  # the export's variant: python -m export build --fp16
    bound = load_model(fp32, entry, settings, max_batch_size=max(BATCHES))
    if provider == "cuda":
        assert bound.bind_device == "cuda" and bound.providers[0] == CUDA
    else:  # the dry run: the same code with IOBinding on the CPU device
        bound = dataclasses.replace(bound, bind_device="cpu")
    plain = dataclasses.replace(bound, bind_device=None)
    half_path = workspace.WORK / "models" / half_entry.artifact.path
    half = dataclasses.replace(
        load_model(half_path, half_entry, settings, max_batch_size=max(BATCHES)),
        bind_device=bound.bind_device,
    )
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for size in BATCHES:
        batch = rng.standard_normal((size, *bound.sample_shape)).astype(np.float32)
        for label, model in (("fp32 run()", plain), ("fp32 IOBinding", bound), ("fp16 IOBinding", half)):
            rows.append({"variant": label, "batch": size, **_time(model, batch, seconds)})
            print(
                f"  {label:15} batch {size:3}: {rows[-1]['images_per_s']:9.1f} images/s  "
                f"p50 {rows[-1]['p50_ms']:.2f} ms",
                flush=True,
            )
    check = rng.standard_normal((64, *bound.sample_shape)).astype(np.float32)
    a, b = bound.run(check), half.run(check)
    parity = {
        "samples": 64,
        "max_abs_diff": float(np.abs(a - b).max()),
        "logit_scale": float(np.abs(a).max()),
        "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "note": f"FP16 against FP32 on the {provider} provider, random-normal inputs, random weights",
        "export_parity": half_entry.parity.model_dump() if half_entry.parity else None,
    }
    return {"rows": rows, "fp16_parity": parity}


def http(seconds: float, provider: str) -> list[dict[str, Any]]:
    body_path = workspace.WORK / "bodies" / "photo.jpg"
    body_path.parent.mkdir(parents=True, exist_ok=True)
    body_path.write_bytes(photo_jpeg())
    port = servers.free_port()
    env = servers.clean_env(
        CONVZOO_REGISTRY_PATH=str(workspace.registry_for(workspace.LARGE)),
        CONVZOO_MODELS_DIR=str(workspace.WORK / "models"),
        CONVZOO_ALLOW_RANDOM_WEIGHTS="true",
        CONVZOO_PRELOAD=workspace.LARGE,
        CONVZOO_PROVIDERS=provider,
        CONVZOO_HOST=servers.HOST,
        CONVZOO_PORT=str(port),
    )
    results = []
    log = workspace.WORK / "logs" / "convzoo-gpu.log"
    with servers.serve([sys.executable, "-m", "service"], env, "/health/ready", port, log) as srv:
        for c in (1, 8, 32, 64) if provider == "cuda" else (1, 8):
            r = load.run(
                f"{srv.url}/classify?model={workspace.LARGE}",
                concurrency=c,
                seconds=seconds,
                body=Body(body_path, "image/jpeg"),
                tool=load.available_tool(),
            )
            print(
                f"  convzoo c{c}: {r['images_per_s']:.1f} images/s  p50 {r['p50_ms']:.2f} ms  "
                f"p99 {r['p99_ms']:.2f} ms  failed {r['failed']}",
                flush=True,
            )
            results.append(r)
    return results


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# GPU benchmark: {r['gpu']}",
        "",
        (
            f"One run, {r['date']}, onnxruntime {r['onnxruntime']}, provider {r['provider']}. "
            "resnet50 with **random weights** (speed does not depend on them)."
        ),
        "",
        "| Variant | Batch | images/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['variant']} | {x['batch']} | {x['images_per_s']:,.1f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} |"
        for x in r["raw"]["rows"]
    ]
    p = r["raw"]["fp16_parity"]
    lines += [
        "",
        (
            f"FP16 parity against FP32: max |diff| {p['max_abs_diff']:.4g} (logit scale {p['logit_scale']:.3g}), "
            f"top-1 agreement {p['top1_agreement']:.3f} on {p['samples']} inputs."
        ),
        "",
        (
            "Parity recorded by the export (FP16 ONNX Runtime on the CPU against PyTorch FP32): "
            + json.dumps(p["export_parity"])
        ),
        "",
        "| convzoo over HTTP (500x375 JPEG) | images/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| c{x['concurrency']} | {x['images_per_s']:,.1f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} |"
        for x in r["http"]
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--dry-run-on-cpu",
        action="store_true",
        help="check the script on a host without a GPU: the same steps on the CPU, batch 1 and 8",
    )
    a = parser.parse_args()
    provider = "cpu" if a.dry_run_on_cpu else "cuda"
    if a.dry_run_on_cpu:
        BATCHES[:] = [1, 8]
    elif CUDA not in ort.get_available_providers():
        print(
            f"no CUDA provider in onnxruntime {ort.__version__} ({ort.get_available_providers()}): "
            "install onnxruntime-gpu on a machine with an NVIDIA driver",
            file=sys.stderr,
        )
        return 2
    workspace.prepare(fp16=True)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu": gpu_name() if provider == "cuda" else "none (dry run on the CPU)",
        "onnxruntime": ort.__version__,
        "provider": provider,
    }
    print(f"GPU: {result['gpu']}", flush=True)
    result["raw"] = raw(a.seconds, provider)
    result["http"] = http(a.seconds, provider)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench-gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / "bench-gpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
