"""Start `python -m service` with CONVZOO_PROVIDERS=cuda, classify one image, print the providers in use.

The serving dependencies only (the standard library, Pillow, numpy, and httpx through convzoo/launch.py);
exits non-zero when CUDA is not used.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (bench/gpu_check.sh)

from convzoo.launch import Launch, LaunchError, Probe, start  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def image_png() -> bytes:
    if FASHION.is_file():
        with gzip.open(FASHION) as f:
            raw = f.read()
        pixels = np.frombuffer(raw, np.uint8, offset=16, count=28 * 28).reshape(28, 28)
    else:
        pixels = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def unavailable(answer: httpx.Response) -> str | None:
    """The readiness's reason when a provider the service was told to use is unavailable: it will not
    become ready, no need to wait for the timeout."""
    try:
        detail = str(answer.json().get("detail", "")) if answer.status_code == 503 else ""
    except ValueError:  # not JSON: not the service's readiness
        return None
    return detail if "unavailable" in detail else None


def main() -> int:
    print(f"onnxruntime {ort.__version__}; available providers: {ort.get_available_providers()}")
    env = {**os.environ, "CONVZOO_PROVIDERS": "cuda"}
    probe = Probe(timeout_s=180, every_s=0.5, request_timeout_s=10, give_up=unavailable)
    try:
        server = start(Launch(env=env, cwd=ROOT, probe=probe, stop_timeout_s=30))
    except LaunchError as exc:
        print(f"NOT READY: {exc}")
        return 1
    with server:
        base = server.url
        request = urllib.request.Request(
            base + "/classify?top_k=3", data=image_png(), headers={"Content-Type": "image/png"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.loads(r.read())
        print("classify:", json.dumps(answer["results"][0]["predictions"]), "timing_ms:", answer["timing_ms"])
        _, detail = get(f"{base}/models/{answer['model']}")
        print(f"model {answer['model']}: providers in use {detail['providers']}")
        if detail.get("calibration"):
            c = detail["calibration"]
            print(
                f"calibration on {c['provider']}: batch-1 p50 {c['p50_ms']:.3f} ms, p99 {c['p99_ms']:.3f} ms, "
                f"{c['throughput_ips']:.0f} images/s at batch {c['batch_size']}"
            )
        return 0 if detail["providers"] and detail["providers"][0] == "CUDAExecutionProvider" else 1


if __name__ == "__main__":
    sys.exit(main())
