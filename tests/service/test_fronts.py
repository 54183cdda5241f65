"""Front processes (service/fronts/): the service with two fronts answers every kind of request as the
service alone does, counts the fronts' requests in its metrics, and outlives a front that dies.

Real `python -m service` processes: the fronts listen on the service's port, the models stay in the
service process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.core.settings import Settings
from tests.live import Server, start_service, stop_service
from tests.security.conftest import children
from tests.service.conftest import FashionSample, Zoo, encode


@pytest.fixture(scope="module")
def pair(source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """The service alone, and the service with two fronts, on the same zoo."""
    logs = tmp_path_factory.mktemp("fronts")
    started = []
    try:
        for fronts in ("0", "2"):
            started.append(
                start_service(
                    registry_path=source_zoo.registry_path,
                    models_dir=source_zoo.models_dir,
                    log_path=logs / f"fronts-{fronts}.log",
                    env={"CONVZOO_FRONT_PROCESSES": fronts},
                )
            )
        yield started[0], started[1]
    finally:
        for server in started:
            stop_service(server)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited: only its parent has not read its status yet


def _fronts(server: Server) -> list[int]:
    pids = []
    for pid in children(server.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"service.fronts" in cmdline and _alive(pid):
            pids.append(pid)
    return pids


def _classify_tiny(server: Server, fashion: FashionSample, times: int) -> None:
    """`times` POST /classify of a tiny image (the fronts' hot path), each on a new connection: all 200."""
    for _ in range(times):
        r = httpx.post(
            server.url + "/classify",
            content=fashion.png(0),
            headers={"content-type": "image/png"},
            timeout=10,
        )
        assert r.status_code == 200, r.text


def _volatile_free(value: Any) -> Any:
    """A body without what differs from one process to another: timings, latencies, ids, uptimes."""
    if isinstance(value, dict):
        return {
            k: _volatile_free(v)
            for k, v in value.items()
            if not any(
                word in k for word in ("timing", "latency", "ms", "_s", "seconds", "id", "calibration")
            )
        }
    if isinstance(value, list):
        return [_volatile_free(v) for v in value]
    return value


def _requests(fashion: FashionSample, default: str) -> list[tuple[str, str, dict[str, Any]]]:
    png = fashion.png(0)
    photo = Image.fromarray(np.dstack([fashion.images[3]] * 3)).resize((600, 400))
    big = encode(photo, "PNG")  # over the tiny-image limit: prepared in the front's pool
    multipart = {
        "files": [("file", ("a.png", png, "image/png")), ("file", ("b.png", fashion.png(1), "image/png"))]
    }
    v2 = {
        "inputs": [
            {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784},
        ]
    }
    return [
        ("POST", "/classify", {"content": png, "headers": {"content-type": "image/png"}}),
        ("POST", "/classify?top_k=3", {"content": big, "headers": {"content-type": "image/png"}}),
        (
            "POST",
            "/classify",
            {"content": big, "headers": {"content-type": "image/png", "expect": "100-continue"}},
        ),
        ("POST", "/classify?model=nope", {"content": png, "headers": {"content-type": "image/png"}}),
        # a catalogued model not built (409, its command) and a mistyped name (404, did_you_mean)
        ("POST", "/classify?model=resnet50", {"content": png, "headers": {"content-type": "image/png"}}),
        (
            "POST",
            f"/classify?model={default.upper()}",
            {"content": png, "headers": {"content-type": "image/png"}},
        ),
        ("POST", "/classify", {"content": b"junk", "headers": {"content-type": "image/png"}}),
        ("POST", "/classify", {"content": png, "headers": {"content-type": "text/plain"}}),
        ("POST", "/classify?top_k=2", multipart),
        ("POST", "/classify?model=auto&dataset=fashion-mnist", multipart),
        ("POST", "/compare?models=" + default, {"content": png, "headers": {"content-type": "image/png"}}),
        ("GET", "/health/live", {}),
        ("GET", "/health/ready", {}),
        ("GET", "/models", {}),
        ("GET", f"/models/{default}", {}),
        ("GET", "/models/nope", {}),
        ("GET", "/nowhere", {}),
        ("DELETE", "/models", {}),
        ("HEAD", "/health/live", {}),
        ("GET", "/v2", {}),
        ("GET", f"/v2/models/{default}", {}),
        ("POST", f"/v2/models/{default}/infer", {"json": v2}),
        ("GET", "/openapi.json", {}),
        ("GET", "/", {}),
    ]


def _comparable(r: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": r.status_code,
        "content-type": r.headers.get("content-type"),
        "retry-after": r.headers.get("retry-after"),
        "request-id": bool(r.headers.get("x-request-id")),
    }
    if "json" in (r.headers.get("content-type") or "") and r.content:
        body = r.json()
        # Each server's own state (what is loaded, measured, counted) differs; the catalogue must not.
        if r.status_code == 200 and r.request.url.path == "/models":
            body = sorted(m["name"] for m in body["models"])
        elif r.status_code == 200 and r.request.url.path.startswith("/models/"):
            body = {"name": body["name"], "members": sorted(body)}
        out["body"] = _volatile_free(body)
    else:
        out["length"] = len(r.content)
    return out


def test_every_kind_of_request_is_answered_through_a_front_as_by_the_service(
    pair: tuple[Server, Server], fashion: FashionSample, source_zoo: Zoo
) -> None:
    alone, fronted = pair
    assert len(_fronts(fronted)) == 2 and _fronts(alone) == []
    mismatches = []
    for method, path, kwargs in _requests(fashion, source_zoo.registry.default):
        answers = []
        for server in (alone, fronted):
            # a new connection each time: the kernel spreads them over the fronts
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answers.append(_comparable(client.request(method, path, **kwargs)))
        if answers[0] != answers[1]:
            mismatches.append((method, path, answers))
    assert not mismatches, mismatches


def test_the_fronts_requests_are_counted_in_the_services_metrics(
    pair: tuple[Server, Server], fashion: FashionSample, source_zoo: Zoo
) -> None:
    _, fronted = pair
    model = source_zoo.registry.default
    series = f'convzoo_requests_total{{model="{model}",route="/classify",status="200"}}'

    def count() -> float:
        text = httpx.get(fronted.url + "/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith(series)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = count()
    _classify_tiny(fronted, fashion, 20)  # new connections: both fronts answer some
    deadline = time.monotonic() + 5
    while count() - before < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count() - before == 20


def test_images_of_every_size_are_prepared_in_a_front(
    pair: tuple[Server, Server], fashion: FashionSample, repo_root: Path
) -> None:
    """The process that holds the models decodes no image of the hot path: a front answers it, whatever the
    image's size (its request log line is the front's)."""
    _, fronted = pair
    fronts = _fronts(fronted)
    tiny = fashion.png(0)
    large = encode(Image.fromarray(np.dstack([fashion.images[3]] * 3)).resize((600, 400)), "PNG")
    ids = []
    photo = (repo_root / "docs" / "examples" / "cat.jpg").read_bytes()
    for body, kind in ((tiny, "image/png"), (large, "image/png"), (photo, "image/jpeg")):
        r = httpx.post(fronted.url + "/classify", content=body, headers={"content-type": kind}, timeout=30)
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-request-id"])
    time.sleep(0.2)
    lines = [json.loads(line) for line in fronted.log().splitlines() if line.startswith("{")]
    answered = {x["request_id"]: x["pid"] for x in lines if x.get("logger") == "convzoo.access"}
    assert all(answered.get(i) in fronts for i in ids), (answered, fronts)
    assert fronted.process.pid not in {answered.get(i) for i in ids}


def _early_answer(url: str, path: str, size: int, *, chunked: bool) -> bytes:
    """Sends a request with a body of `size` bytes, while reading the answer that may come before the body
    has all been sent: everything the server sent before it closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    head += "transfer-encoding: chunked\r\n\r\n" if chunked else f"content-length: {size}\r\n\r\n"

    def send_all() -> None:
        with contextlib.suppress(OSError):  # the server may close before it has read it all
            sock.sendall(head.encode())
            for start in range(0, size, 65536):
                piece = b"0" * min(65536, size - start)
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")

    sender = threading.Thread(target=send_all)
    sender.start()
    answer = b""
    with contextlib.suppress(OSError):  # a timeout too: the connection must end with the answer
        while chunk := sock.recv(65536):
            answer += chunk
    sock.close()
    sender.join()
    return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_relayed_answer_is_not_lost_when_the_service_answers_before_the_body_ends(
    pair: tuple[Server, Server], source_zoo: Zoo, chunked: bool
) -> None:
    """The service answers a body over the upload limit (from its Content-Length, or once the chunks cross
    it) and closes its end while the front still relays the body: the front must relay the answer the
    service alone gives, not fail on the broken pipe (a 500)."""
    alone, fronted = pair
    model = source_zoo.registry.default
    # routes the fronts relay: /compare refuses from the Content-Length, /v2 while it reads the chunks
    path = f"/v2/models/{model}/infer" if chunked else f"/compare?models={model}"
    # the default upload limit crossed; chunked, by far: the answer comes while the body is still on its way
    size = Settings().max_upload_bytes * (2 if chunked else 1) + 1
    answer = _early_answer(alone.url, path, size, chunked=chunked)
    expected = answer.split(b"\r\n", 1)[0]
    assert expected in (b"HTTP/1.1 413 Request Entity Too Large", b"HTTP/1.1 400 Bad Request")
    assert b"connection: close" in answer.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    answers = [_early_answer(fronted.url, path, size, chunked=chunked) for _ in range(10)]
    statuses = [answer.split(b"\r\n", 1)[0] for answer in answers]
    assert statuses == [expected] * 10, statuses
    # as from the service alone: the rest of the body is not read, so the connection ends with the answer
    heads = [answer.split(b"\r\n\r\n")[0].lower().split(b"\r\n") for answer in answers]
    assert all(b"connection: close" in head for head in heads), heads


def test_bodiless_requests_relayed_in_a_row_are_all_answered(pair: tuple[Server, Server]) -> None:
    _, fronted = pair
    statuses = set()
    with httpx.Client(base_url=fronted.url, timeout=30) as client:  # one connection: one front
        for i in range(300):
            statuses.add(client.get(f"/v2/models/nope-{i}/versions/1").status_code)
    assert statuses == {404}


def test_a_front_that_dies_is_started_again(source_zoo: Zoo, fashion: FashionSample, tmp_path: Any) -> None:
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=tmp_path / "server.log",
        env={"CONVZOO_FRONT_PROCESSES": "2"},
    )
    try:
        first = _fronts(server)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(_fronts(server)) < 2 or first[0] in _fronts(server)):
            time.sleep(0.1)
        assert len(_fronts(server)) == 2 and first[0] not in _fronts(server), server.log()
        time.sleep(1.5)  # the new front's start-up
        _classify_tiny(server, fashion, 10)
        assert "starting it again" in server.log()
        running = _fronts(server)
    finally:
        stop_service(server)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in running):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in running)  # none left behind


def _tiny_jpeg_and_its_pixels(fashion: FashionSample) -> tuple[bytes, bytes]:
    """A 128x128 JPEG, a front's tiny image (decoded at 1/4 for a resize of 28 where reduction is on), and
    a PNG of its full decoding."""
    large = Image.fromarray(fashion.images[0]).resize((128, 128), Image.Resampling.BICUBIC)
    jpeg = encode(large, "JPEG", quality=90)
    with Image.open(io.BytesIO(jpeg)) as decoded:
        return jpeg, encode(decoded.convert("L"), "PNG")


def _lenet5(server: Server, body: bytes, media: str) -> dict[str, Any]:
    r = httpx.post(
        server.url + "/classify",
        params={"model": "fmnist-lenet5", "top_k": 10},
        content=body,
        headers={"content-type": media},
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["results"][0]
    return result


def test_a_front_decodes_as_the_published_preprocessing_says(
    pair: tuple[Server, Server], source_zoo: Zoo, fashion: FashionSample, tmp_path: Any
) -> None:
    jpeg, png = _tiny_jpeg_and_its_pixels(fashion)
    fronts = pair[1]
    reduced = _lenet5(fronts, jpeg, "image/jpeg")
    assert (reduced["width"], reduced["height"]) == (128, 128)  # the upload's size, though decoded at 32x32
    assert reduced["predictions"] != _lenet5(fronts, png, "image/png")["predictions"]
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=tmp_path / "server.log",
        env={"CONVZOO_FRONT_PROCESSES": "1", "CONVZOO_REDUCE_AT_DECODE": "false"},
    )
    try:
        assert len(_fronts(server)) == 1
        published = httpx.get(server.url + "/models/fmnist-lenet5").json()["preprocessing"]
        full = _lenet5(server, jpeg, "image/jpeg")
        assert published["reduce_at_decode"] is False
        assert full["predictions"] == _lenet5(server, png, "image/png")["predictions"]  # the same pixels
    finally:
        stop_service(server)


def test_sigterm_stops_the_fronts_with_the_service(source_zoo: Zoo, tmp_path: Any) -> None:
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=tmp_path / "server.log",
        env={"CONVZOO_FRONT_PROCESSES": "2"},
    )
    fronts = _fronts(server)
    assert len(fronts) == 2
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(20) in (0, -signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in fronts):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in fronts)


def test_the_default_plans_a_front_per_core() -> None:
    from service.compute.cpus import cores, front_processes

    assert front_processes() == (0 if cores() < 2 else min(int(cores()), 4))


def test_a_front_does_not_load_onnx_runtime() -> None:
    """A front holds no model: what it imports is its memory, paid once per front (about 20 MB for ORT)."""
    code = "import sys, service.fronts.__main__; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False", out.stderr
