"""How far reduced-size decoding (`Preprocessing.reduce_at_decode`) moves the answers, against full decoding.

`python -m bench.draft` runs every photo the tests and docs/examples use, as JPEGs, through each built
model of the registry twice, through the service's own decoding and preprocessing: once as served (large
JPEGs decoded at 1/2, 1/4 or 1/8 by the JPEG decoder) and once decoded at full size. It prints, per model,
how many images the reduction changed, the top-1 agreement and the largest |difference| of any class's
probability, as a Markdown table (docs/preprocessing.md records one run). The photos as the tests send
them are mostly too small to be reduced for a resize of 256 (a JPEG is reduced from twice the resize), so
each is also measured upscaled 2, 3 and 4 times, as a camera's larger picture of the same scene.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from skimage import data as photos

from service.core.registry import ModelEntry, load_registry
from service.images.postprocess import softmax
from service.images.preprocess import decode_upload, to_tensor

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
TEST_PHOTOS = ("chelsea", "coffee", "camera", "motorcycle_left", "rocket")  # tests/service/test_photos.py
SCALES = (1, 2, 3, 4)
MAX_PIXELS = 40_000_000


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)  # as the tests encode them
    return buf.getvalue()


def sources() -> dict[str, Image.Image]:
    """The photos of tests/service/test_photos.py, the 512x600 portrait of its reproduction test, and
    docs/examples, at their own size."""
    images: dict[str, Image.Image] = {}
    for name in TEST_PHOTOS:
        pixels = photos.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(photos, name)()  # type: ignore[no-untyped-call]
        images[name] = Image.fromarray(pixels)
    images["astronaut 512x600"] = Image.fromarray(photos.astronaut()).resize(  # type: ignore[no-untyped-call]
        (512, 600), Image.Resampling.LANCZOS
    )
    for path in sorted(EXAMPLES.glob("*.jpg")):
        with Image.open(path) as image:
            images[f"examples/{path.name}"] = image.convert("RGB")
    return images


def uploads(scale: int) -> dict[str, bytes]:
    """Every source enlarged `scale` times, as a JPEG."""
    out: dict[str, bytes] = {}
    for name, image in sources().items():
        size = (image.width * scale, image.height * scale)
        out[name] = _jpeg(image if scale == 1 else image.resize(size, Image.Resampling.LANCZOS))
    return out


@dataclass(frozen=True)
class Agreement:
    model: str
    scale: int  # the photos enlarged this many times
    images: int
    reduced: int  # images the reduction decoded at a smaller size
    top1_agreement: float
    max_abs_prob_diff: float  # over every class of every image
    max_top1_prob_diff: float  # of the full decoding's top-1 class
    disagreements: list[str]  # "photo: top-1 reduced (p) / full (p)"


def _probabilities(session: ort.InferenceSession, entry: ModelEntry, tensors: list[np.ndarray]) -> np.ndarray:
    logits = session.run(None, {entry.input.name: np.stack(tensors)})[0]
    return softmax(np.asarray(logits))


def measure(
    entry: ModelEntry,
    session: ort.InferenceSession,
    labels: list[str],
    scale: int,
    images: dict[str, bytes],
) -> Agreement:
    pp, reduced, served, full = entry.preprocessing, 0, [], []
    for data in images.values():
        small = decode_upload(data, max_pixels=MAX_PIXELS, draft_size=pp.resize)
        whole = decode_upload(data, max_pixels=MAX_PIXELS)
        reduced += small.image.size != whole.image.size
        served.append(to_tensor(small.image, pp))
        full.append(to_tensor(whole.image, pp))
    a, b = _probabilities(session, entry, served), _probabilities(session, entry, full)
    tops, served_tops = b.argmax(axis=1), a.argmax(axis=1)
    rows = np.arange(len(tops))
    disagreements = [
        f"{name}: {labels[i]} {a[r, i]:.3f} reduced / {labels[j]} {b[r, j]:.3f} full"
        for r, (name, i, j) in enumerate(zip(images, served_tops, tops, strict=True))
        if i != j
    ]
    return Agreement(
        model=entry.name,
        scale=scale,
        images=len(images),
        reduced=int(reduced),
        top1_agreement=float((served_tops == tops).mean()),
        max_abs_prob_diff=float(np.abs(a - b).max()),
        max_top1_prob_diff=float(np.abs(a[rows, tops] - b[rows, tops]).max()),
        disagreements=disagreements,
    )


def table(results: list[Agreement]) -> str:
    lines = [
        "| model | photos | enlarged | reduced at decoding | top-1 agreement | max abs prob. diff "
        "| max abs top-1 prob. diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.images} | x{r.scale} | {r.reduced} | {r.top1_agreement:.3f} "
            f"| {r.max_abs_prob_diff:.4f} | {r.max_top1_prob_diff:.4f} |"
        )
    lines += [""] + [f"- {r.model}, x{r.scale}: {d}" for r in results for d in r.disagreements]
    return "\n".join(lines)


def decode_ms(resize: int, rounds: int = 5) -> tuple[float, float]:
    """The fastest of `rounds` decodes of a 4000x3000 (12-megapixel) JPEG: reduced for `resize`, and full."""
    big = _jpeg(Image.fromarray(photos.astronaut()).resize((4000, 3000), Image.Resampling.BICUBIC))  # type: ignore[no-untyped-call]
    best = []
    for draft in (resize, None):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            decode_upload(big, max_pixels=MAX_PIXELS, draft_size=draft)
            times.append((time.perf_counter() - t0) * 1e3)
        best.append(min(times))
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registry", type=Path, default=ROOT / "registry.yaml")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--models", nargs="*", help="registry names (default: every built FP32 model)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    args = parser.parse_args()
    registry = load_registry(args.registry)
    names = args.models or [
        m.name
        for m in registry.models
        if m.built and m.quantization is None and (args.models_dir / m.artifact.path).is_file()
    ]
    photo_sets = {scale: uploads(scale) for scale in SCALES}
    results = []
    for name in names:
        entry = registry.get(name)
        path = str(args.models_dir / entry.artifact.path)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        labels = registry.labels_of(name)
        results += [measure(entry, session, labels, scale, images) for scale, images in photo_sets.items()]
    if args.json:
        for r in results:
            print(json.dumps(asdict(r)))
    else:
        print(table(results))
    reduced, full = decode_ms(256)
    print(f"\n12-megapixel JPEG, decode for a resize of 256: {reduced:.1f} ms reduced, {full:.1f} ms full")


if __name__ == "__main__":
    main()
