"""The benchmark's own machinery: its load generators against a real uvicorn process, and its report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import load, report, servers
from bench.images import fashion_png, photo_jpeg
from bench.load import Body


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
                "batches": {
                    "1": {"images_per_s": 40.0, "p50_ms": 25.0, "p99_ms": 26.0, "alone_p50_ms": 30.0}
                },
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


def test_a_new_run_keeps_the_perf_analyzer_section_of_bench_md() -> None:
    section = f"{report.PERF_ANALYZER_BEGIN}\n## perf_analyzer\nfigures\n{report.PERF_ANALYZER_END}"
    old = f"# Benchmark\nold table\n\n{section}\n"
    assert (
        report.keeping_other_sections("# Benchmark\nnew table\n", old)
        == f"# Benchmark\nnew table\n\n{section}\n"
    )
    assert (
        report.keeping_other_sections("# Benchmark\nnew table", "# Benchmark\nold\n")
        == "# Benchmark\nnew table\n"
    )


# ---- the peers (bench/peers/): their request framing, reporting and failure handling; none is started here


@pytest.mark.parametrize("tool", ["python", "wrk"])
def test_a_peers_extra_headers_reach_the_server(bare: servers.Running, tool: str, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    if tool == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (bench/ensure-wrk.sh installs it)")
    url = f"{bare.url}/headers"
    with pytest.raises(urllib.error.HTTPError, match="400"):  # the route refuses a request without it
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
    path = tmp_path / "x.png"
    path.write_bytes(fashion_png())
    with_header = Body(path, "image/png", (("X-Bench-Check", "1"),))
    ok = load.run(url, concurrency=2, seconds=1, body=with_header, tool=tool, warmup_s=0)
    assert ok["requests"] > 5 and ok["failed"] == 0


def _form_field(body: bytes, content_type: str, field: str) -> bytes:
    """The field as Starlette's multipart parser (what LitServe and BentoML run on) reads it."""
    import asyncio

    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def parse() -> bytes:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}
        form = await Request(scope, receive).form()
        upload = form[field]
        assert isinstance(upload, UploadFile)
        return await upload.read()

    return asyncio.run(parse())


def test_every_peer_receives_the_same_image_bytes() -> None:
    import json

    from bench.peers import FIELD, request

    image = photo_jpeg()
    raw, raw_type, raw_headers = request("raw", image, "image/jpeg")
    assert (raw, raw_type, raw_headers) == (image, "image/jpeg", ())
    form, form_type, _ = request("multipart", image, "image/jpeg")
    assert form_type.startswith("multipart/form-data; boundary=")
    assert _form_field(form, form_type, FIELD) == image
    v2, v2_type, v2_headers = request("v2", image, "image/jpeg")
    head_len = int(dict(v2_headers)["Inference-Header-Content-Length"])
    header = json.loads(v2[:head_len])
    element = v2[head_len:]
    assert v2_type == "application/octet-stream"
    assert header["inputs"][0]["datatype"] == "BYTES" and header["inputs"][0]["shape"] == [1, 1]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(element)
    assert int.from_bytes(element[:4], "little") == len(image) and element[4:] == image


def test_a_peer_not_installed_or_not_starting_is_reported_and_the_bench_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex
    import sys

    from bench.peers import Peer, run

    # The peers' virtualenv stands in as this test's own interpreter, which has pytest (the "installed"
    # peer below). Not a symlink to it: a link outside a virtualenv runs the base interpreter, whose
    # packages differ from machine to machine.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    monkeypatch.setattr(run, "VENV", venv)
    monkeypatch.setattr("bench.peers.VENV", venv)
    body = tmp_path / "x.png"
    body.write_bytes(fashion_png())

    def never(*_: object) -> dict[str, object]:
        raise AssertionError("no load point without a server")

    args = {"paths": {}, "concurrencies": [1], "image": Body(body, "image/png"), "load_point": never}
    missing = Peer("nope", "Nope", "no-such-distribution", "raw", "/", "/", ("python", "-c", "pass"))
    got = run.measure(missing, work=tmp_path / "a", log=tmp_path / "a.log", **args)  # type: ignore[arg-type]
    assert got["status"] == "not installed in .venv-peers" and got["points"] == []
    dies = Peer("dies", "Dies", "pytest", "raw", "/", "/", ("python", "-c", "raise SystemExit(3)"))
    got = run.measure(dies, work=tmp_path / "b", log=tmp_path / "b.log", **args)  # type: ignore[arg-type]
    assert got["version"]  # installed, so its version is named
    assert got["status"].startswith("failed:") and "did not become ready" in got["status"]


def test_the_side_by_side_targets_use_convzoos_runs_before_and_after() -> None:
    from bench.peers import report as peers_report

    before = [_point(1, 400, 2), _point(32, 600, 20)]
    after = [_point(1, 200, 2), _point(32, 600, 20)]
    fast = {"status": "ok", "points": [_point(1, 250, 2), _point(32, 1200, 9)]}
    r = {
        "convzoo": {"fmnist-lenet5": before},
        "convzoo_after_peers": {"fmnist-lenet5": after},
        "peers": [
            {
                "peer": "Fast",
                "version": "1.0",
                "results": {"fmnist-lenet5": {**fast, "convzoo_before": before, "convzoo_after": after}},
            },
            {
                "peer": "Broken",
                "version": None,
                "results": {"fmnist-lenet5": {"status": "failed: x", "points": []}},
            },
        ],
    }
    got = [(t["target"], t["value"], t["met"]) for t in peers_report.targets(r)]
    assert got == [
        ("fmnist-lenet5 c1: convzoo / Fast", 1.2, True),
        ("fmnist-lenet5 c32: convzoo / Fast", 0.5, False),
    ]
    text = peers_report.markdown(r)
    assert "| Broken | — |" in text and "fmnist-lenet5: failed: x" in text
    assert "1,200.0 (2.00x)" in text and "1 of 2 met" in text
