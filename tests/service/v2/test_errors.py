"""Errors under /v2 keep the protocol's shape, `{"error": "..."}`, whatever part of the service raises them."""

from __future__ import annotations

import pytest

from tests.service.conftest import ClientFactory, Zoo

pytestmark = pytest.mark.anyio


def _body(zoo: Zoo) -> dict[str, object]:
    entry = zoo.registry.get(zoo.registry.default)
    shape = [1, *[int(d) for d in entry.input.shape[1:]]]
    return {
        "inputs": [
            {
                "name": entry.input.name,
                "shape": shape,
                "datatype": "FP32",
                "data": [0.0] * (shape[1] * shape[2] * shape[3]),
            }
        ]
    }


async def test_oversized_body(client_for: ClientFactory, zoo: Zoo) -> None:
    async with client_for(zoo, max_upload_mb=0.001) as client:
        response = await client.post(f"/v2/models/{zoo.registry.default}/infer", json=_body(zoo))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "upload limit" in response.json()["error"]


async def test_unavailable_model_is_503_with_retry_after(client_for: ClientFactory, zoo: Zoo) -> None:
    zoo.artifact(zoo.registry.default).write_bytes(b"not an onnx file")
    async with client_for(zoo) as client:
        ready = await client.get("/v2/health/ready")
        infer = await client.post(f"/v2/models/{zoo.registry.default}/infer", json=_body(zoo))
        model_ready = await client.get(f"/v2/models/{zoo.registry.default}/ready")
    for response in (ready, infer, model_ready):
        assert response.status_code == 503
        assert set(response.json()) == {"error"}
    assert int(infer.headers["Retry-After"]) >= 1
    assert "sha256" in infer.json()["error"]


async def test_wrong_method_and_unknown_route(client_for: ClientFactory, zoo: Zoo) -> None:
    async with client_for(zoo) as client:
        wrong = await client.get(f"/v2/models/{zoo.registry.default}/infer")
        unknown = await client.get("/v2/no/such/thing")
    assert wrong.status_code == 405 and set(wrong.json()) == {"error"}
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}


async def test_infer_on_unknown_model_never_reads_the_body(client_for: ClientFactory, zoo: Zoo) -> None:
    async with client_for(zoo) as client:
        response = await client.post("/v2/models/nope/infer", content=b"garbage")
    assert response.status_code == 404 and response.json() == {"error": "Unknown model 'nope'"}


async def test_large_json_bodies_are_decoded_off_the_loop(client_for: ClientFactory, zoo: Zoo) -> None:
    body = _body(zoo)
    body["inputs"][0]["data"] = [[v] for v in body["inputs"][0]["data"]]  # type: ignore[index]
    body["pad"] = "x" * 70_000  # over the off-loop threshold; unknown fields are ignored
    async with client_for(zoo) as client:
        response = await client.post(f"/v2/models/{zoo.registry.default}/infer", json=body)
        broken = await client.post(f"/v2/models/{zoo.registry.default}/infer", content=b"[" * 70_000)
    assert response.status_code == 200, response.text
    assert broken.status_code == 400 and set(broken.json()) == {"error"}


@pytest.mark.parametrize("body", [b"[" * 100_000, b"{not json", b'{"ready": "yes"}', b"[]"])
async def test_bad_repository_index_requests_are_400(
    client_for: ClientFactory, zoo: Zoo, body: bytes
) -> None:
    async with client_for(zoo) as client:
        response = await client.post("/v2/repository/index", content=body)
        ready = await client.post("/v2/repository/index", json={"ready": True})
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert ready.status_code == 200 and [m["state"] for m in ready.json()] == ["READY"]


@pytest.mark.parametrize(
    ("accept", "encoding"), [("gzip", "gzip"), ("deflate", "deflate"), ("identity", None), ("gzip;q=0", None)]
)
async def test_response_compression_follows_accept_encoding(
    client_for: ClientFactory, zoo: Zoo, accept: str, encoding: str | None
) -> None:
    async with client_for(zoo) as client:
        response = await client.post(
            f"/v2/models/{zoo.registry.default}/infer", json=_body(zoo), headers={"Accept-Encoding": accept}
        )
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == encoding
    assert response.json()["outputs"][0]["name"] == "logits"  # httpx decompresses
