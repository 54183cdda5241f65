"""The in-process rows: raw ONNX Runtime with the decoding done in the same process, no HTTP.

`python -m bench.phone.limit --registry R --model M PHOTO...` prints one JSON object:

- `decode_ms`: one core's time per photo to decode it fully and with convzoo's reduced-size decode
  (`service.images.preprocess.decode`, EXIF orientation applied), one photo at a time (`_median_ms`);
- `prepare_ms`: the same to the model's tensor: a full decode then convzoo's preprocessing, convzoo's own
  path, and the users' usual path (PIL.Image.open, convert("RGB"), torchvision Resize(256)/CenterCrop(224)/
  ToTensor/Normalize);
- `points`: per decode ("full": decoded at 12 MP, then convzoo's preprocessing; "reduced": convzoo's own
  decode) and per concurrency C, C threads each taking the next photo, decoding, preprocessing and running
  it as a batch of one through the service's session code and settings: images/s, p50/p99 of one photo's
  decode-to-logits time, and the process's CPU per image; as many photos as the servers' points get
  (`bench.phone.images_for`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers.common import usual_tensor
from bench.phone import images_for
from service.compute.runtime import load_model
from service.core.registry import ModelEntry, load_registry
from service.core.settings import Settings
from service.images import preprocess

Tensor = Callable[[bytes], np.ndarray]


def decoder(entry: ModelEntry, settings: Settings, decode: str) -> Callable[[bytes], Any]:
    """A full ("full") or convzoo's reduced-size ("reduced") decode of a photo."""
    draft = preprocess.draft_size(entry.preprocessing) if decode == "reduced" else None
    return lambda data: preprocess.decode(data, max_pixels=settings.max_image_pixels, draft_size=draft)


def tensor_of(entry: ModelEntry, settings: Settings, decode: str) -> Tensor:
    """A photo's tensor as convzoo prepares it, after a full or reduced decode."""
    decoded = decoder(entry, settings, decode)
    return lambda data: preprocess.to_tensor(decoded(data), entry.preprocessing)


def _median_ms(step: Callable[[bytes], Any], photos: list[bytes], rounds: int = 3) -> float:
    """The median over the photos of each one's fastest of `rounds` runs: on a shared host the fastest
    run is the one least slowed by other work, and the photos differ (a portrait one is also turned)."""
    step(photos[0])  # first-call costs (imports, tables) out of the figure
    fastest = []
    for data in photos:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            step(data)
            times.append(time.perf_counter() - t0)
        fastest.append(min(times))
    return statistics.median(fastest) * 1e3


def _point(run: Callable[[bytes], Any], photos: list[bytes], concurrency: int, images: int) -> dict[str, Any]:
    taken = iter(range(images))
    lock = threading.Lock()
    latencies: list[float] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(taken, None)
            if i is None:
                return
            t0 = time.perf_counter()
            run(photos[i % len(photos)])
            latencies.append(time.perf_counter() - t0)  # list.append is atomic

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu0, start = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    ms = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": images,
        "images_per_s": images / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "server_cpu_ms_per_request": cpu * 1e3 / images,
    }


def measure(
    registry: Path, name: str, paths: list[Path], concurrencies: list[int], images: int, seconds: float
) -> dict[str, Any]:
    settings = Settings(registry_path=registry, calibration_s=0)
    entry = load_registry(registry).get(name)
    model = load_model(settings.models_dir / entry.artifact.path, entry, settings, max_batch_size=1)
    photos = [p.read_bytes() for p in paths]
    decoders = {d: tensor_of(entry, settings, d) for d in ("full", "reduced")}
    out: dict[str, Any] = {
        "model": name,
        "decode_ms": {d: _median_ms(decoder(entry, settings, d), photos) for d in decoders},
        "prepare_ms": {
            **{d: _median_ms(tensor, photos) for d, tensor in decoders.items()},
            "usual": _median_ms(usual_tensor(entry), photos),
        },
        "points": {},
    }
    for decode, tensor in decoders.items():

        def run(data: bytes, tensor: Tensor = tensor) -> Any:
            return model.run(tensor(data)[None])

        run(photos[0])  # warm-up
        points = out["points"][decode] = []
        for c in concurrencies:
            warm = _point(run, photos, c, max(c, len(photos)))  # as the servers' warm-up: every photo once
            points.append(
                _point(run, photos, c, images_for(warm["images_per_s"], len(photos), images, seconds))
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrencies", default="1,4")
    parser.add_argument("--images", type=int, default=24, help="photos per point, at least")
    parser.add_argument(
        "--min-seconds", type=float, default=4.0, help="and at least this long at the warm-up's rate"
    )
    parser.add_argument("photos", type=Path, nargs="+")
    a = parser.parse_args()
    concurrencies = [int(c) for c in a.concurrencies.split(",")]
    print(json.dumps(measure(a.registry, a.model, a.photos, concurrencies, a.images, a.min_seconds)))


if __name__ == "__main__":
    main()
