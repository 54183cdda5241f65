"""The benchmark's own machinery: its load generators against a real uvicorn process, and its report."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import load, report, servers
from bench.images import fashion_png, photo_jpeg
from bench.load import Body


@pytest.fixture(scope="module")
def bare() -> Iterator[servers.Running]:
    port = servers.free_port()
    cmd = servers.uvicorn_app("bench.bare_app:create_app", port, workers=1, log_level="warning")
    with servers.serve(cmd, servers.clean_env(), "/health", port, Path("/dev/null")) as srv:
        yield srv


def test_bodies_are_the_stated_images() -> None:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(photo_jpeg())) as jpeg:
        assert (jpeg.format, jpeg.size) == ("JPEG", (500, 375))
    with Image.open(BytesIO(fashion_png())) as png:
        assert (png.format, png.size, png.mode) == ("PNG", (28, 28), "L")


@pytest.mark.parametrize("tool", ["python", "wrk"])
def test_a_load_point_counts_answers_and_latencies(bare: servers.Running, tool: str, tmp_path: Path) -> None:
    if tool == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (bench/ensure-wrk.sh installs it)")
    body = tmp_path / "x.png"
    body.write_bytes(fashion_png())
    cpu0 = bare.cpu_s()
    point = load.run(
        f"{bare.url}/classify", concurrency=4, seconds=1, body=Body(body, "image/png"), tool=tool, warmup_s=0
    )
    assert point["requests"] > 10 and point["failed"] == 0
    assert point["images_per_s"] > 0 and 0 < point["p50_ms"] <= point["p99_ms"] <= point["max_ms"]
    assert bare.cpu_s() > cpu0  # the server's own CPU time is read from its process group


def _point(c: int, ips: float, p50: float) -> dict[str, object]:
    return {"concurrency": c, "images_per_s": ips, "p50_ms": p50, "p99_ms": p50 * 2, "requests": 100}


def test_targets_are_computed_from_the_run() -> None:
    r = {
        "raw": {
            "resnet50": {
                "images_per_s": 40.0,
                "best_batch": 1,
                "batches": {"1": {"images_per_s": 40.0, "p50_ms": 25.0, "p99_ms": 26.0, "alone_p50_ms": 30.0}},
            }
        },
        "convzoo": {
            "resnet50": [_point(1, 30, 32.5), _point(8, 36, 200), _point(32, 37, 800)],
            "fmnist-lenet5": [_point(1, 400, 2), _point(8, 1500, 5), _point(32, 1400, 20)],
        },
        "naive": {"resnet50": [_point(1, 15, 60), _point(8, 16, 500)]},
        "bare": [_point(1, 1500, 0.5), _point(8, 2600, 3), _point(32, 3000, 10)],
    }
    got = {
        t.target.split(":")[0] + str(i): (round(t.value, 3), t.met)
        for i, t in enumerate(report.targets(report.Systems.model_validate(r)))
    }
    assert list(got.values()) == [(0.9, True), (2.25, True), (2.5, True), (0.467, False)]


def test_the_readme_block_is_replaced_between_its_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    r: dict[str, object] = {}
    monkeypatch.setattr(report, "readme_block", lambda _r: f"{report.BEGIN}\nnew\n{report.END}")
    assert report.update_readme(r, readme)
    assert readme.read_text() == f"intro\n{report.BEGIN}\nnew\n{report.END}\noutro\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(r, plain) and plain.read_text() == "no markers\n"
