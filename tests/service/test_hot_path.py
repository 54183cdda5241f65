"""The hot path of POST /classify (service/api/hot_path.py) answers exactly as the route does.

Every case is sent twice with the same body: once as the hot path takes it, once with a query parameter
the route ignores (`via=route`), which sends it to the route. Statuses, headers that matter and bodies
(but for the measured timings) must be equal, over the classes of answers: success, each error, and the
requests the hot path must leave to the route.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.api.hot_path import simple_query
from service.api.schemas import ClassifyResponse
from tests.service.conftest import ClientFactory, FashionSample, Zoo, encode

pytestmark = pytest.mark.anyio


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and whose data is one empty compressed block."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _comparable(response: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": response.status_code,
        "content-type": response.headers.get("content-type"),
        "retry-after": response.headers.get("retry-after"),
    }
    if response.headers.get("content-type", "").endswith("json"):
        body = response.json()
        if isinstance(body, dict):
            body.pop("timing_ms", None)
        out["body"] = body
    return out


def _cases(fashion: FashionSample) -> list[tuple[str, dict[str, str], bytes, str]]:
    png = fashion.png(0)
    rgb = Image.fromarray(np.dstack([fashion.images[1]] * 3))
    rgba = Image.fromarray(np.dstack([fashion.images[2]] * 3 + [np.full((28, 28), 128, np.uint8)]))
    return [
        ("png", {}, png, "image/png"),
        ("top_k 1", {"top_k": "1"}, png, "image/png"),
        ("top_k all", {"top_k": "10"}, png, "image/png"),
        ("jpeg, rgb", {}, encode(rgb, "JPEG", quality=90), "image/jpeg"),
        ("rgba png", {"top_k": "3"}, encode(rgba, "PNG"), "image/png"),
        ("large png, a thread lane", {}, encode(rgb.resize((400, 300)), "PNG"), "image/png"),
        ("type parameters", {}, png, "image/png; charset=binary"),
        ("empty model: the default", {"model": ""}, png, "image/png"),
        ("top_k over the classes", {"top_k": "11"}, png, "image/png"),
        ("unknown model", {"model": "no-such-model"}, png, "image/png"),
        ("empty body", {}, b"", "image/png"),
        ("not an image", {}, b"hello, world" * 10, "image/png"),
        ("truncated png", {}, png[: len(png) // 2], "image/png"),
        ("a refused format", {}, encode(rgb, "ICO"), "image/png"),
        ("too many pixels", {}, _png_header_only(30_000, 30_000), "image/png"),
        ("bad content type", {}, png, "text/plain"),
    ]


async def test_hot_path_answers_as_the_route_does(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    mismatches = []
    async with client_for(zoo) as client:
        for name, params, body, content_type in _cases(fashion):
            headers = {"content-type": content_type}
            hot = await client.post("/classify", params=params, content=body, headers=headers)
            route = await client.post(
                "/classify", params={**params, "via": "route"}, content=body, headers=headers
            )
            if _comparable(hot) != _comparable(route):
                mismatches.append((name, _comparable(hot), _comparable(route)))
            if hot.status_code == 200:
                ClassifyResponse.model_validate(hot.json())  # the documented schema
                assert hot.headers["x-request-id"]
    assert not mismatches, mismatches


async def test_hot_path_answers_are_counted_and_labelled_as_the_routes(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    async with client_for(zoo) as client:
        default = await client.post(
            "/classify", content=fashion.png(0), headers={"content-type": "image/png"}
        )
        assert default.status_code == 200
        model = default.json()["model"]
        for _ in range(3):
            await client.post("/classify", content=b"junk", headers={"content-type": "image/png"})
        text = (await client.get("/metrics")).text
    ok = f'convzoo_requests_total{{model="{model}",route="/classify",status="200"}} 1.0'
    bad = f'convzoo_requests_total{{model="{model}",route="/classify",status="400"}} 3.0'
    assert ok in text and bad in text, [line for line in text.splitlines() if "requests_total" in line]


def test_only_simple_queries_take_the_hot_path() -> None:
    assert simple_query(b"") == (None, 5)
    assert simple_query(b"model=a&top_k=3") == ("a", 3)
    assert simple_query(b"model=&top_k=1") == ("", 1)
    assert simple_query(b"model=a%20b") == ("a b", 5)
    route = [
        b"model=auto",  # the choice needs the route's selection
        b"model=a&model=b",
        b"top_k=0",
        b"top_k=-1",
        b"top_k=3.0",
        b"top_k=+3",
        b"top_k=",
        b"top_k=9999999999",
        b"model=a&dataset=x",
        b"via=route",
    ]
    assert [q for q in route if simple_query(q) is not None] == []


def test_large_images_are_not_prepared_on_the_event_loop(fashion: FashionSample) -> None:
    from service.server.preprocess_pool import INLINE_PIXELS, inline

    assert inline(fashion.png(0))
    big = Image.new("L", (200, 200))
    assert INLINE_PIXELS < 200 * 200 and not inline(encode(big, "PNG"))
    assert not inline(_png_header_only(1, 10_000))  # few pixels, many rows
    assert not inline(b"not an image")  # the thread lane answers it
    buf = io.BytesIO()
    Image.new("L", (16, 16)).save(buf, "PNG")
    assert not inline(buf.getvalue() + b"\0" * 70_000)  # over the byte limit
