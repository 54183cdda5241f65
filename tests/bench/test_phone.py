"""The phone-photo section (bench/phone/): its photos, its fixed-count client against a real uvicorn
process, the peers' two image paths, and the rendering of its part of docs/bench.md."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from bench import report, servers
from bench.load import Body
from bench.peers import PEERS
from bench.peers.common import IMAGE_PATH, usual_tensor
from bench.phone import photos
from bench.phone import report as phone_report
from bench.phone.client import write_bodies
from bench.phone.run import variants
from service.core.registry import Registry
from tests.paths import REPO


def test_a_phone_photo_is_12_mp_with_its_orientation_and_the_same_every_time() -> None:
    recipe = next(r for r in photos.RECIPES if r.orientation == photos.PORTRAIT)
    data = photos.make(recipe, seed=1)
    assert data == photos.make(recipe, seed=1)  # deterministic: a cached file is what a new run would make
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("JPEG", (4032, 3024))
        assert image.getexif()[photos.ORIENTATION] == photos.PORTRAIT
        assert ImageOps.exif_transpose(image).size == (3024, 4032)  # shown upright as a portrait
    assert 1.5e6 < len(data) < 5e6  # a phone's quality-90 photo, not an upscaled smooth one (0.8 MB)


def test_the_usual_image_path_decodes_fully_to_the_models_tensor(committed_registry: Registry) -> None:
    entry = committed_registry.get("efficientnet_lite0")
    photo = photos.make(photos.RECIPES[0], seed=0)
    tensor = usual_tensor(entry)(photo)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32
    # Normalize with the entry's mean and std: a mid-grey pixel comes out near 0
    assert -1.1 < float(tensor.min()) < float(tensor.max()) < 1.1


def test_every_peer_runs_twice_its_users_path_then_convzoos() -> None:
    got = variants(list(PEERS))
    assert len(got) == 2 * len(PEERS)
    for (usual, usual_path), (ours, ours_path), peer in zip(got[::2], got[1::2], PEERS, strict=True):
        assert ours == peer and ours_path == "convzoo's preprocessing"
        assert usual.key != peer.key and usual.label == peer.label
        if peer.key == "torchserve":
            assert usual_path == "stock image_classifier handler"
            assert usual.start[-2:] == ("--handler", "stock") and usual.env == ()
        else:
            assert usual_path == "PIL + torchvision" and dict(usual.env) == {IMAGE_PATH: "usual"}


def test_the_client_sends_exactly_the_photos_asked_for_and_waits_for_each(
    bare: servers.Running, tmp_path: Path
) -> None:
    bodies = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"x" * (i + 1) * 1000)
        bodies.append(Body(path, "image/jpeg"))
    listing = write_bodies(bodies, tmp_path / "bodies.json")
    cmd = [sys.executable, "-m", "bench.phone.client", f"{bare.url}/classify", "--concurrency", "4"]
    cmd += ["--requests", "10", "--bodies", str(listing)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    point = json.loads(done.stdout)
    assert (point["requests"], point["failed"], point["concurrency"]) == (10, 0, 4)
    assert point["images_per_s"] > 0 and 0 < point["p50_ms"] <= point["p99_ms"]
    missing = [sys.executable, "-m", "bench.phone.client", f"{bare.url}/nowhere", "--concurrency", "1"]
    missing += ["--requests", "2", "--bodies", str(listing)]
    done = subprocess.run(missing, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout)["failed"] == 2  # a 4xx answer counts as failed, not as served


def _point(c: int, ips: float, cpu: float) -> dict[str, Any]:
    return {
        "concurrency": c,
        "images_per_s": ips,
        "p50_ms": 1000 / ips,
        "p99_ms": 2000 / ips,
        "server_cpu_ms_per_request": cpu,
        "requests": 24,
    }


def _run() -> dict[str, Any]:
    model = {
        # convzoo before the peers and after the first one (mean at c4: 20), then after the second
        "convzoo_runs": [
            [_point(1, 10, 60), _point(4, 16, 60)],
            [_point(1, 10, 60), _point(4, 24, 60)],
            [_point(1, 10, 40), _point(4, 40, 40)],
        ],
        "limit": {
            "decode_ms": {"full": 240.0, "reduced": 25.0},
            "prepare_ms": {"full": 300.0, "reduced": 40.0, "usual": 350.0},
            "points": {
                "full": [_point(1, 3, 300), _point(4, 5, 300)],
                "reduced": [_point(1, 12, 45), _point(4, 25, 45)],
            },
        },
        "peers": [
            {
                "key": "ts-stock",
                "peer": "TorchServe",
                "image_path": "stock image_classifier handler",
                "version": "0.12.0",
                "status": "ok",
                "points": [_point(1, 2, 320), _point(4, 2.5, 300)],
                "bracket": 0,
            },
            {
                "key": "ts",
                "peer": "TorchServe",
                "image_path": "convzoo's preprocessing",
                "version": "0.12.0",
                "status": "ok",
                "points": [_point(1, 6, 120), _point(4, 10, 110)],
                "bracket": 0,
            },
            {
                "key": "next",
                "peer": "Next",
                "image_path": "PIL + torchvision",
                "version": "1.0",
                "status": "ok",
                "points": [_point(1, 5, 200), _point(4, 8, 200)],
                "bracket": 1,  # between the second and third runs: 32 images/s at c4, 50 ms of CPU
            },
            {
                "key": "gone-usual",
                "peer": "Gone",
                "image_path": "PIL + torchvision",
                "version": None,
                "status": "not installed in .venv-peers",
                "points": [],
                "bracket": 2,
            },
        ],
    }
    return {
        "date": "2026-12-02T11:00:00+00:00",
        "host": {"cpu": "AMD EPYC", "cores": 2, "load_average_at_start": [3.0], "load_average_at_end": [4.0]},
        "photos": [
            {"name": "a.jpg", "bytes": 2_700_000, "size": [4032, 3024], "orientation": 1},
            {"name": "b.jpg", "bytes": 2_600_000, "size": [4032, 3024], "orientation": 6},
        ],
        "images_per_point": 24,
        "models": {"efficientnet_lite0": model},
        "wall_s": 600.0,
    }


def test_the_phone_section_states_the_rows_and_their_ratios() -> None:
    text = phone_report.section(phone_report.PhoneRun.model_validate(_run()))
    assert text.startswith(phone_report.BEGIN) and text.endswith(phone_report.END)
    # the stock handler at c4: 2.5 images/s against convzoo's mean 20: 0.12x, and 8.0x in words
    assert "| TorchServe | stock image_classifier handler | 0.12.0 | 2.00 (0.20x) |" in text
    assert "2.50 (0.12x)" in text and "TorchServe 8.0x" in text
    assert "| Next | PIL + torchvision | 1.0 | 5.00 (0.50x) |" in text and "8.00 (0.25x)" in text
    assert "convzoo serves 4.0x to 8.0x their photos/s (TorchServe 8.0x, Next 4.0x)" in text
    assert "they spend 4.0x to 5.0x its server CPU per photo" in text  # 300 / 60 and 200 / 50 ms
    assert "convzoo answers 26.7 photos/s (the mean of its runs) for 53 ms" in text
    assert "4.0x its rate with a full decode" in text  # 20 (its first two runs) / 5
    assert "80% of its rate with convzoo's reduced decode" in text  # 20 / 25
    assert "TorchServe 4.0x) and reach 0.5x convzoo's rate" in text  # 10 / 2.5, 10 / 20
    assert "the mean of its 3 runs (c1 10.00 to 10.00, c4 16.00 to 40.00 images/s)" in text
    assert "| Gone | PIL + torchvision | — | — |" in text and "not installed in .venv-peers |" in text
    assert "Not measured: Gone, PIL + torchvision: not installed in .venv-peers." in text
    assert "| efficientnet_lite0 | 240 | 25 | 300 | 40 | 350 |" in text
    assert "1 tagged EXIF orientation 6" in text and "2.6 to 2.7 MB" in text


def test_the_phone_section_alone_replaces_only_its_part(tmp_path: Path) -> None:
    run = _run()
    (tmp_path / "bench.json").write_text(json.dumps({"raw": {"kept": True}}))
    old = f"# Benchmark\ntable\n\n{phone_report.HOW}\nhow\n\n<!-- perf_analyzer: begin -->\npa\n<!-- perf_analyzer: end -->\n"
    (tmp_path / "bench.md").write_text(old)
    report.write_phone(run, tmp_path)
    text = (tmp_path / "bench.md").read_text()
    assert text.index("table") < text.index(phone_report.BEGIN) < text.index(phone_report.HOW)
    assert json.loads((tmp_path / "bench.json").read_text()) == {"raw": {"kept": True}, "phone": run}
    run["models"]["efficientnet_lite0"]["convzoo_runs"][0][0]["images_per_s"] = 13.0
    report.write_phone(run, tmp_path)  # a second run: replaced in place, once
    again = (tmp_path / "bench.md").read_text()
    assert again.count(phone_report.BEGIN) == 1 and "| 11.00 |" in again and again.endswith("end -->\n")
    # a full run without the section keeps the old one
    kept = report.keeping_other_sections(f"# Benchmark\nnew\n\n{phone_report.HOW}\nhow\n", again)
    assert phone_report.old_section(kept) == phone_report.old_section(again)
    assert kept.count("<!-- perf_analyzer: begin -->") == 1


def test_a_point_has_its_least_photos_or_its_seconds_of_them_in_whole_rounds() -> None:
    from bench.phone import images_for

    assert images_for(2.0, 4) == 24  # 12 s at the slowest rows' rate: the least count
    assert images_for(20.0, 4) == 80  # 24 would be 1.2 s of a fast row
    assert images_for(20.5, 4) == 84  # 82 photos, rounded up to whole rounds of the 4
