"""What the models see (service/monitor/), on the real Fashion-MNIST models through the real app: the
reference written by the export stage and read back, shifted streams of test images moving the drift
statistics past their thresholds (an unshifted one not), real photos flagged unusual by a Fashion-MNIST
model, a reference captured from traffic, /compare across label sets, and payload sampling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data as photos

from export import reference as export_reference
from export.fashion.data import read_idx
from service.images.preprocess import to_tensor
from service.monitor import reference
from service.monitor.sampling import Sampler
from tests.paths import FASHION_TEST_IMAGES, FASHION_TEST_LABELS
from tests.service.conftest import ClientFactory, ServeFactory, Zoo, encode

pytestmark = pytest.mark.anyio

MODEL = "fmnist-lenet5"
WINDOW = 200
PHOTOS = [
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "horse",
    "moon",
    "page",
    "rocket",
    "text",
    "brick",
    "grass",
]


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    return read_idx(FASHION_TEST_IMAGES), read_idx(FASHION_TEST_LABELS).astype(np.int64)


def _png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def _stream(shift: str, n: int) -> list[bytes]:
    """n Fashion-MNIST test images as PNG, shifted as named."""
    images, labels = _test_images()
    transforms: dict[str, Callable[[Image.Image], Image.Image]] = {
        "none": lambda im: im,
        "blurred": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
        "darkened": lambda im: im.point(lambda v: v // 2),
        "two-class": lambda im: im,
    }
    chosen = np.where(labels < 2)[0][:n] if shift == "two-class" else np.arange(n)
    return [_png(transforms[shift](Image.fromarray(images[i]))) for i in chosen]


async def _classify(client: httpx.AsyncClient, body: bytes, model: str = MODEL) -> dict[str, Any]:
    r = await client.post(
        "/classify", params={"model": model}, content=body, headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["results"][0]
    return result


def test_the_reference_is_written_and_read_back(zoo: Zoo) -> None:
    entry = zoo.registry.get(MODEL)
    tensors = export_reference.fashion_tensors(entry, images=slice(0, 500))
    updated, built = export_reference.record(entry, zoo.models_dir, tensors, "fashion-mnist test, first 500")
    assert updated.reference == "fmnist-lenet5.reference.json"
    read = reference.load(zoo.models_dir / updated.reference)
    assert read == built
    assert read.samples == 500 and read.model == MODEL and read.version == entry.version
    assert sum(read.class_prior) == pytest.approx(1.0)
    assert 0.9 < read.ood_threshold <= 1.0
    found = reference.References(zoo.models_dir, zoo.models_dir / "captured").get(updated)
    assert found == built
    # a reference of another version is not this version's
    other = updated.model_copy(update={"version": "other"})
    assert reference.References(zoo.models_dir, zoo.models_dir / "captured").get(other) is None


def test_the_committed_fashion_models_have_their_reference(zoo: Zoo) -> None:
    entry = zoo.registry.get(MODEL)
    assert entry.reference is not None
    read = reference.load(zoo.models_dir / entry.reference)
    assert read.source == "fashion-mnist test split" and read.samples == 10_000


@pytest.mark.parametrize("shift", ["none", "blurred", "darkened", "two-class"])
async def test_a_shifted_stream_drifts_and_an_unshifted_one_does_not(
    zoo: Zoo, client_for: ClientFactory, shift: str
) -> None:
    bodies = _stream(shift, WINDOW)
    async with client_for(zoo, monitor_window=WINDOW, monitor_min_answers=WINDOW) as client:
        for body in bodies:
            await _classify(client, body)
        report = (await client.get(f"/models/{MODEL}/monitor")).json()
    assert report["window"]["answers"] == WINDOW and report["answers"] == WINDOW
    assert report["drift"]["judged"]
    exceeded = {s["name"] for s in report["drift"]["statistics"] if s["exceeded"]}
    assert report["drift"]["drifting"] == (shift != "none"), report["drift"]
    expected = {"none": set(), "blurred": {"psi_confidence"}, "darkened": {"psi_brightness"}}
    if shift == "two-class":
        assert "psi_class_prior" in exceeded
        shares = {c["label"]: c["share"] for c in report["window"]["classes"]}
        assert shares["T-shirt/top"] + shares["Trouser"] > 0.8
    else:
        assert expected[shift] <= exceeded


async def test_real_photos_sent_to_a_fashion_mnist_model_are_unusual(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    images, _ = _test_images()
    async with client_for(zoo) as client:
        fashion_answers = [await _classify(client, _png(Image.fromarray(images[i]))) for i in range(200)]
        photo_answers = [
            await _classify(client, encode(Image.fromarray(getattr(photos, name)()), "JPEG", quality=90))
            for name in PHOTOS
        ]
        report = (await client.get(f"/models/{MODEL}/monitor")).json()
    flagged = [name for name, a in zip(PHOTOS, photo_answers, strict=True) if a["unusual"]]
    assert len(flagged) >= 0.9 * len(PHOTOS), flagged
    assert all(0.0 <= a["ood_score"] <= 1.0 for a in photo_answers + fashion_answers)
    false_positives = sum(a["unusual"] for a in fashion_answers)
    assert false_positives <= 0.1 * len(fashion_answers)  # about 5% expected: the reference's quantile
    assert report["unusual"] == len(flagged) + false_positives
    assert report["window"]["inputs"]["grey_share"] < 1.0  # the colour photos, last in the window


async def test_a_reference_is_captured_from_traffic(zoo: Zoo, client_for: ClientFactory) -> None:
    registry = zoo.registry
    entry = registry.get(MODEL)
    zoo.save(
        registry.model_copy(
            update={
                "models": [
                    m.model_copy(update={"reference": None}) if m.name == MODEL else m
                    for m in registry.models
                ]
            }
        )
    )
    bodies = _stream("none", 120)
    async with client_for(zoo) as client:
        before = await _classify(client, bodies[0])
        assert "unusual" not in before  # no reference, no score
        r = await client.post(f"/models/{MODEL}/monitor/reference", params={"samples": 100})
        assert r.status_code == 200 and r.json() == {"samples": 100, "collected": 0}
        for body in bodies[:100]:
            await _classify(client, body)
        report = (await client.get(f"/models/{MODEL}/monitor")).json()
        after = await _classify(client, bodies[110])
    assert report["reference"]["source"] == "captured from traffic (100 answers)"
    assert report["capture"] is None
    assert isinstance(after["unusual"], bool)
    captured = zoo.models_dir / "references" / MODEL / f"{entry.version}.json"
    assert reference.load(captured).samples == 100


async def test_compare_flags_models_of_different_label_sets(
    photo_zoo: Zoo, client_for: ClientFactory
) -> None:
    images, _ = _test_images()
    image = {"file": ("x.png", _png(Image.fromarray(images[0])), "image/png")}
    async with client_for(photo_zoo) as client:
        r = await client.post("/compare", params={"models": f"{MODEL},efficientnet_lite0"}, files=image)
        same = await client.post("/compare", params={"models": f"{MODEL},fmnist-alexnet"}, files=image)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label_sets_differ"] == [[MODEL], ["efficientnet_lite0"]]
    assert all("predictions" in m for m in body["models"])  # each answers, in its own labels
    assert body["agreement"]["top1"] is None and body["agreement"]["pairwise"] == []  # none computed across
    assert "label_sets_differ" not in same.json() and same.json()["agreement"]["top1"] is not None


def test_sampling_rotates_and_caps(tmp_path: Path) -> None:
    sampler = Sampler(tmp_path, share=1.0, images=True, file_bytes=2_000, max_bytes=6_000, seed=0)
    for i in range(200):
        assert sampler.draw()
        sampler.offer({"i": i, "predictions": [{"label": "Bag", "score": 0.5}]}, b"\x89PNG" * 10)
    sampler.close()
    files = sorted(tmp_path.glob("samples-*.jsonl"))
    assert len(files) >= 2  # rotated
    assert sum(f.stat().st_size for f in files) <= 6_000  # capped: the oldest removed
    last = [json.loads(line) for line in files[-1].read_text().splitlines()]
    assert last[-1]["i"] == 199 and "image_base64" in last[-1]
    assert sampler.written + sampler.dropped == 200


def test_a_full_sampling_queue_drops_rather_than_waits(tmp_path: Path) -> None:
    sampler = Sampler(tmp_path, share=1.0, images=False, file_bytes=10_000, max_bytes=100_000)
    started = time.perf_counter()
    results = [sampler.offer({"i": i}) for i in range(20_000)]
    elapsed = time.perf_counter() - started
    sampler.close()
    assert elapsed < 5.0  # each offer returns at once: no request waits for the disk
    assert sampler.dropped == results.count(False)
    assert sampler.written == results.count(True)


def _wait_for(read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


@pytest.mark.parametrize("fronts", ["0", "2"])
def test_the_monitor_is_one_across_front_processes(
    zoo: Zoo, serve: ServeFactory, tmp_path: Path, fronts: str
) -> None:
    samples = tmp_path / "samples"
    server = serve(
        zoo,
        CONVZOO_FRONT_PROCESSES=fronts,
        CONVZOO_MONITOR_WINDOW="100",
        CONVZOO_MONITOR_MIN_ANSWERS="100",
        CONVZOO_SAMPLE_DIR=str(samples),
        CONVZOO_SAMPLE_SHARE="1",
    )
    bodies = _stream("two-class", 100)
    answers = []
    for body in bodies:  # a new connection each: the kernel spreads them over the fronts
        r = httpx.post(
            server.url + "/classify",
            params={"model": MODEL},
            content=body,
            headers={"content-type": "image/png"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        answers.append(r.json()["results"][0])
    assert all(isinstance(a["unusual"], bool) for a in answers)
    report = _wait_for(
        lambda: httpx.get(f"{server.url}/models/{MODEL}/monitor", timeout=10).json(),
        lambda rep: rep["answers"] >= 100,
    )
    assert report["answers"] == 100
    assert report["drift"]["drifting"]
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert f'convzoo_drifting{{model="{MODEL}",version="{report["version"]}"}} 1.0' in metrics
    assert (
        f'convzoo_answer_confidence_count{{model="{MODEL}",version="{report["version"]}"}} 100.0' in metrics
    )
    lines = _wait_for(
        lambda: {"n": sum(len(f.read_text().splitlines()) for f in samples.glob("samples-*.jsonl"))},
        lambda v: v["n"] >= 100,
    )
    assert lines["n"] == 100
    record = json.loads(next(samples.glob("samples-*.jsonl")).read_text().splitlines()[0])
    assert record["model"] == MODEL and record["results"][0]["predictions"]


async def test_a_request_is_answered_alike_with_the_monitor_off(zoo: Zoo, client_for: ClientFactory) -> None:
    body = _stream("none", 1)[0]
    async with client_for(zoo, monitor=False) as client:
        off = await _classify(client, body)
        report = (await client.get(f"/models/{MODEL}/monitor")).json()
    async with client_for(zoo) as client:
        on = await _classify(client, body)
    assert "unusual" not in off and report["answers"] == 0
    assert on["predictions"] == off["predictions"]
    await asyncio.sleep(0)


async def test_v2_answers_are_monitored_too(zoo: Zoo, client_for: ClientFactory) -> None:
    images, _ = _test_images()
    entry = zoo.registry.get(MODEL)
    x = np.stack([to_tensor(Image.fromarray(images[i]), entry.preprocessing) for i in range(3)])
    request = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    async with client_for(zoo) as client:
        r = await client.post(f"/v2/models/{MODEL}/infer", content=json.dumps(request))
        assert r.status_code == 200, r.text
        report = (await client.get(f"/models/{MODEL}/monitor")).json()
    assert report["answers"] == 3
    assert report["window"]["inputs"]["width"]["mean"] == 28  # the tensor's size: no upload here


async def test_a_broken_reference_file_costs_the_answer_nothing_but_its_score(
    zoo: Zoo, client_for: ClientFactory
) -> None:
    entry = zoo.registry.get(MODEL)
    assert entry.reference is not None
    (zoo.models_dir / entry.reference).write_text('{"model": "fmnist-lenet5", "trunc')
    async with client_for(zoo) as client:
        answer = await _classify(client, _stream("none", 1)[0])
        report = (await client.get(f"/models/{MODEL}/monitor")).json()
    assert answer["predictions"] and "unusual" not in answer
    assert report["answers"] == 1 and report["reference"] is None
