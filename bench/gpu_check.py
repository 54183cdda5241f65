"""Start `python -m service` with CONVZOO_PROVIDERS=cuda, classify one image, print the providers in use.

Standard library plus Pillow and numpy (the serving dependencies); exits non-zero when CUDA is not used.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def main() -> int:
    print(f"onnxruntime {ort.__version__}; available providers: {ort.get_available_providers()}")
    port = free_port()
    env = {**os.environ, "CONVZOO_PROVIDERS": "cuda", "CONVZOO_PORT": str(port), "CONVZOO_HOST": "127.0.0.1"}
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                status, body = get(base + "/health/ready")
            except (urllib.error.URLError, ConnectionError):
                status, body = 0, {}
            if status == 200:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"NOT READY: {body.get('detail', 'server exited')}")
                return 1
            if status == 503 and "unavailable" in body.get("detail", ""):
                print(f"NOT READY: {body['detail']}")
                return 1
            time.sleep(0.5)
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
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
