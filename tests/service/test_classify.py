"""POST /classify against the real app and the committed fashion zoo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from tests.asgi import manager_of_client
from tests.service.conftest import ClientFactory, FashionSample, Zoo, encode

pytestmark = pytest.mark.anyio


def problem(response: object) -> dict[str, Any]:
    import httpx

    assert isinstance(response, httpx.Response)
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == response.status_code
    text = response.text
    assert "Traceback" not in text and "/tmp" not in text and ".onnx" not in text and "/models/" not in text
    return body


async def test_fashion_test_images_are_classified_correctly(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    registry = zoo.registry
    # The best model by the accuracy the export stage measured with ONNX Runtime on the whole test split.
    measured = [
        m
        for m in registry.models
        if m.dataset == "fashion-mnist"
        and m.metrics.accuracy_source == "measured"
        and zoo.artifact(m.name).is_file()
    ]
    best = max(measured, key=lambda m: m.metrics.top1 or 0.0)
    labels = registry.labels_of(best.name)
    correct = 0
    async with client_for(zoo) as client:
        for start in range(0, 300, 30):  # 10 requests of 30 files each
            files = [("file", (f"{i}.png", fashion.png(i), "image/png")) for i in range(start, start + 30)]
            r = await client.post("/classify", files=files, params={"top_k": 1, "model": best.name})
            assert r.status_code == 200, r.text
            for i, result in zip(range(start, start + 30), r.json()["results"], strict=True):
                assert result["filename"] == f"{i}.png"
                top = result["predictions"][0]
                assert top["label"] == labels[top["index"]]
                correct += top["index"] == fashion.labels[i]
    accuracy = correct / 300
    # PNG upload -> decode -> preprocessing -> ONNX Runtime reproduces the export's measured accuracy
    # (within sampling error of 300 images), and the large majority is right.
    assert accuracy >= (best.metrics.top1 or 0.0) - 0.08, (best.name, accuracy, best.metrics.top1)
    assert accuracy > 0.5, (best.name, accuracy)


async def test_response_shape_follows_the_contract(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    registry = zoo.registry
    async with client_for(zoo) as client:
        r = await client.post("/classify", files={"file": ("shoe.png", fashion.png(0), "image/png")})
    assert r.status_code == 200
    body = r.json()
    entry = registry.get(registry.default)
    assert body["model"] == entry.name and body["version"] == entry.version
    (result,) = body["results"]
    assert (result["filename"], result["width"], result["height"]) == ("shoe.png", 28, 28)
    preds = result["predictions"]
    assert len(preds) == 5
    assert set(preds[0]) == {"index", "label", "score"}
    scores = [p["score"] for p in preds]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores)
    assert set(body["timing_ms"]) == {"decode", "preprocess", "queue", "inference", "total"}
    assert all(v >= 0 for v in body["timing_ms"].values())
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"]


async def test_scores_are_the_softmax_of_all_classes(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    n = zoo.registry.get(zoo.registry.default).num_classes
    async with client_for(zoo) as client:
        r = await client.post(
            "/classify", params={"top_k": n}, files={"file": ("a.png", fashion.png(3), "image/png")}
        )
    preds = r.json()["results"][0]["predictions"]
    assert len(preds) == n and sorted(p["index"] for p in preds) == list(range(n))
    assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-6)


async def test_several_files_keep_upload_order(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    async with client_for(zoo) as client:
        single = []
        for i in range(4):
            r = await client.post("/classify", content=fashion.png(i), headers={"content-type": "image/png"})
            single.append(r.json()["results"][0]["predictions"])
        files = [("file", (f"img{i}.png", fashion.png(i), "image/png")) for i in range(4)]
        r = await client.post("/classify", files=files)
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [f"img{i}.png" for i in range(4)]
    for got, want in zip(results, single, strict=True):
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want]
        assert got["predictions"][0]["score"] == pytest.approx(want[0]["score"], rel=1e-4)


@pytest.mark.parametrize(
    ("fmt", "media"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("GIF", "image/gif"),
        ("TIFF", "image/tiff"),
    ],
)
async def test_raw_bodies_of_every_accepted_type(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample, fmt: str, media: str
) -> None:
    data = encode(Image.fromarray(fashion.images[1]), fmt)
    async with client_for(zoo) as client:
        r = await client.post("/classify", content=data, headers={"content-type": media}, params={"top_k": 1})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["filename"] is None and (result["width"], result["height"]) == (28, 28)


async def test_another_model_by_name(zoo: Zoo, client_for: ClientFactory, fashion: FashionSample) -> None:
    registry = zoo.registry
    other = next(
        m
        for m in registry.models
        if m.name != registry.default and m.weights.kind != "random" and zoo.artifact(m.name).is_file()
    )
    async with client_for(zoo) as client:
        r = await client.post(
            "/classify", params={"model": other.name}, files={"file": ("x.png", fashion.png(0))}
        )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == other.name


# ---- errors -------------------------------------------------------------------------------------------


async def test_error_statuses(zoo: Zoo, client_for: ClientFactory, fashion: FashionSample) -> None:
    png = fashion.png(0)
    n = zoo.registry.get(zoo.registry.default).num_classes
    async with client_for(zoo, max_image_pixels=10_000, max_upload_mb=0.05) as client:
        cases = [
            (
                await client.post(
                    "/classify", content=b"\x89PNG garbage", headers={"content-type": "image/png"}
                ),
                400,
            ),
            (await client.post("/classify", files={"file": ("t.png", png[: len(png) // 2])}), 400),
            (
                await client.post(
                    "/classify", params={"model": "no-such-model"}, files={"file": ("a.png", png)}
                ),
                404,
            ),
            (await client.get("/no/such/route"), 404),
            (await client.get("/classify"), 405),
            (await client.delete("/models"), 405),
            (
                await client.post("/classify", content=b"x" * 60_000, headers={"content-type": "image/png"}),
                413,
            ),
            (
                await client.post(
                    "/classify", files={"file": ("big.png", encode(Image.new("L", (200, 200)), "PNG"))}
                ),
                413,
            ),
            (await client.post("/classify", content=png, headers={"content-type": "text/plain"}), 415),
            (await client.post("/classify", content=png), 415),
            (
                await client.post(
                    "/classify", files={"file": ("a.ico", encode(Image.new("L", (16, 16)), "ICO"))}
                ),
                415,
            ),
            (await client.post("/classify", params={"top_k": 0}, files={"file": ("a.png", png)}), 422),
            (await client.post("/classify", params={"top_k": n + 1}, files={"file": ("a.png", png)}), 422),
            (await client.post("/classify", params={"top_k": "many"}, files={"file": ("a.png", png)}), 422),
            (await client.post("/classify", files={"other": ("a.png", png)}), 422),
            (await client.get("/models", params={"sort": "nonsense"}), 422),
            (await client.get("/models", params={"format": "xml"}), 422),
            (await client.get("/models/no-such-model"), 404),
            (await client.get("/models/no-such-model/labels"), 404),
        ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        problem(response)


async def test_one_bad_file_fails_the_request_with_its_status(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    files = [("file", ("ok.png", fashion.png(0))), ("file", ("bad.png", b"not an image"))]
    async with client_for(zoo) as client:
        r = await client.post("/classify", files=files)
        assert r.status_code == 400
        assert (await client.post("/classify", files=files[:1])).status_code == 200


async def test_too_many_files(zoo: Zoo, client_for: ClientFactory, fashion: FashionSample) -> None:
    files = [("file", (f"{i}.png", fashion.png(i))) for i in range(5)]
    async with client_for(zoo, max_files_per_request=4) as client:
        r = await client.post("/classify", files=files)
    assert r.status_code in (400, 413)
    problem(r)


async def test_full_queue_is_503_with_retry_after(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    import asyncio

    async with client_for(zoo, max_queue_size=2, max_queue_delay_us=300_000, max_batch_size=64) as client:
        files = [("file", (f"{i}.png", fashion.png(i))) for i in range(2)]
        first = asyncio.create_task(client.post("/classify", files=files))
        state = manager_of_client(client).state(zoo.registry.default)
        for _ in range(1000):  # until the first request's two images fill the queue (not a fixed pause)
            if state.batcher is not None and state.batcher.queued >= 2:
                break
            await asyncio.sleep(0.01)
        second = await client.post("/classify", files={"file": ("x.png", fashion.png(5))})
        assert second.status_code == 503
        assert int(second.headers["retry-after"]) >= 1
        problem(second)
        assert (await first).status_code == 200


async def test_deadline_is_503(zoo: Zoo, client_for: ClientFactory, fashion: FashionSample) -> None:
    async with client_for(zoo, request_timeout_s=0.05, max_queue_delay_us=400_000) as client:
        r = await client.post("/classify", files={"file": ("x.png", fashion.png(0))})
    assert r.status_code == 503 and "retry-after" in r.headers
    assert "deadline" in problem(r)["detail"]


async def test_chunked_body_over_the_limit_is_413(zoo: Zoo, client_for: ClientFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies as the body streams in
        for _ in range(100):
            yield b"x" * 1000

    async with client_for(zoo, max_upload_mb=0.05) as client:
        r = await client.post("/classify", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413
    problem(r)


async def test_concurrent_requests_get_their_own_results(
    zoo: Zoo, client_for: ClientFactory, fashion: FashionSample
) -> None:
    import asyncio

    async with client_for(zoo, max_queue_delay_us=5_000) as client:

        async def top(i: int) -> tuple[int, float]:
            r = await client.post("/classify", content=fashion.png(i), headers={"content-type": "image/png"})
            assert r.status_code == 200
            p = r.json()["results"][0]["predictions"][0]
            return p["index"], p["score"]

        sequential = [await top(i) for i in range(24)]
        concurrent = await asyncio.gather(*(top(i) for i in range(24)))
        manager = manager_of_client(client)
        batcher = manager.state(zoo.registry.default).batcher
        assert batcher is not None
        sizes = batcher.stats.batches_by_size
    for (i_seq, s_seq), (i_con, s_con) in zip(sequential, concurrent, strict=True):
        assert i_seq == i_con and s_seq == pytest.approx(s_con, rel=1e-4)
    assert max(sizes) > 1  # the concurrent requests were batched together
