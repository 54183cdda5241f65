"""Real photographs nobody here made (scikit-image's sample data) through the bundled photo model.

The default model is the pretrained EfficientNet-Lite0: a photo sent without `model=` gets an ImageNet
answer. A wrong colour order, mean/std, resize, crop or label index would show here, on real pixels.
The photos reach the service as every client sends them: JPEG and PNG, grayscale, RGBA, EXIF-rotated;
through /classify, through /v2 with the client doing the preprocessing `GET /models/{name}` documents,
and through /compare. A client following that preprocessing (docs/preprocessing.md) gets, through /v2,
exactly the answer /classify gives, reduced-size JPEG decoding included.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from service.api.classification import prepare
from tests.service.conftest import ClientFactory, Zoo, encode
from tests.service.published import published_tensor

pytestmark = pytest.mark.anyio

PHOTO_MODEL = "efficientnet_lite0"
CAT = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}

# photo -> (ImageNet classes that are right for it, how deep the right class may be).
# ImageNet-1k has no "rocket" or "motorcycle": the nearest classes are accepted, within the top 5.
EXPECTED: dict[str, tuple[set[str], int]] = {
    "chelsea": (CAT, 1),
    "coffee": ({"espresso"}, 1),
    "camera": ({"tripod"}, 1),  # the cameraman's camera stands on one; the photo is grayscale
    "motorcycle_left": ({"moped", "motor scooter"}, 1),
    "rocket": ({"missile", "projectile", "space shuttle"}, 1),
}


def photo(name: str) -> Image.Image:
    if name == "motorcycle_left":
        pixels: np.ndarray = photos.stereo_motorcycle()[0]  # type: ignore[no-untyped-call]
    else:
        pixels = getattr(photos, name)()
    return Image.fromarray(pixels)


async def classify(client: httpx.AsyncClient, body: bytes, media: str, **params: Any) -> list[str]:
    r = await client.post(
        "/classify", params={"top_k": 5, **params}, content=body, headers={"content-type": media}
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == params.get("model", PHOTO_MODEL)
    return [p["label"] for p in answer["results"][0]["predictions"]]


def assert_right(name: str, labels: list[str]) -> None:
    right, within = EXPECTED[name]
    assert right & set(labels[:within]), f"{name}: top-5 {labels}"


async def test_the_default_model_is_the_photo_model(photo_zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(photo_zoo) as client:
        listing = (await client.get("/models")).json()
        labels = await classify(client, encode(photo("coffee"), "JPEG", quality=90), "image/jpeg")
    assert listing["default"] == PHOTO_MODEL
    assert labels[0] == "espresso"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_real_photos_get_the_right_imagenet_class(
    photo_zoo: Zoo, client_for: ClientFactory, fmt: str
) -> None:
    async with client_for(photo_zoo) as client:
        for name in EXPECTED:
            image = photo(name)
            body = encode(image, fmt, quality=90) if fmt == "JPEG" else encode(image, fmt)
            assert_right(name, await classify(client, body, f"image/{fmt.lower()}"))


async def test_grayscale_rgba_and_exif_rotated_copies(photo_zoo: Zoo, client_for: ClientFactory) -> None:
    cat, coffee = photo("chelsea"), photo("coffee")
    rgba = cat.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size).point(lambda v: 128 + v // 2))  # half to opaque
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer rotates 90 degrees clockwise to show it upright
    stored = coffee.transpose(Image.Transpose.ROTATE_90)  # so the stored pixels are turned the other way
    async with client_for(photo_zoo) as client:
        gray = await classify(client, encode(coffee.convert("L"), "PNG"), "image/png")
        translucent = await classify(client, encode(rgba, "PNG"), "image/png")
        rotated = await classify(client, encode(stored, "JPEG", quality=90, exif=exif), "image/jpeg")
        sideways = await classify(client, encode(stored, "JPEG", quality=90), "image/jpeg")
    assert_right("coffee", gray)
    assert_right("chelsea", translucent)
    assert_right("coffee", rotated)
    assert rotated[:3] != sideways[:3]  # the orientation tag was applied, not ignored


def client_side_tensor(image: Image.Image, pre: dict[str, Any]) -> np.ndarray:
    """What a /v2 client does with `GET /models/{name}`'s preprocessing, written from its description."""
    rgb = image.convert(pre["color_mode"])
    scale = pre["resize"] / min(rgb.size)
    resized = rgb.resize(
        (max(pre["resize"], int(rgb.width * scale)), max(pre["resize"], int(rgb.height * scale))),
        Image.Resampling[pre["interpolation"].upper()],
    )
    left, top = round((resized.width - pre["crop"]) / 2), round((resized.height - pre["crop"]) / 2)
    cropped = resized.crop((left, top, left + pre["crop"], top + pre["crop"]))
    x = (np.asarray(cropped, dtype=np.float32) / 255 - np.float32(pre["mean"])) / np.float32(pre["std"])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


async def test_the_same_photos_through_v2_with_client_side_preprocessing(
    photo_zoo: Zoo, client_for: ClientFactory
) -> None:
    async with client_for(photo_zoo) as client:
        pre = (await client.get(f"/models/{PHOTO_MODEL}")).json()["preprocessing"]
        for name in EXPECTED:
            x = client_side_tensor(photo(name), pre)
            request = {
                "inputs": [
                    {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                ],
                "outputs": [{"name": "logits", "parameters": {"classification": 5}}],
            }
            r = await client.post(f"/v2/models/{PHOTO_MODEL}/infer", content=json.dumps(request))
            assert r.status_code == 200, r.text
            ranked = r.json()["outputs"][0]["data"]  # "logit:index:label", best first
            assert_right(name, [entry.split(":", 2)[2] for entry in ranked])


async def test_compare_runs_a_photo_through_the_photo_model_and_others(
    photo_zoo: Zoo, client_for: ClientFactory
) -> None:
    async with client_for(photo_zoo) as client:
        r = await client.post(
            "/compare",
            params={"models": f"{PHOTO_MODEL},fmnist-lenet5", "top_k": 5},
            content=encode(photo("chelsea"), "JPEG", quality=90),
            headers={"content-type": "image/jpeg"},
        )
    assert r.status_code == 200, r.text
    answers = {m["model"]: m for m in r.json()["models"]}
    assert_right("chelsea", [p["label"] for p in answers[PHOTO_MODEL]["predictions"]])
    assert "predictions" in answers["fmnist-lenet5"]  # a Fashion-MNIST model answers too, in its own labels


# ---- faithful preprocessing: a /v2 client reproduces /classify -------------------------------------------


def portrait() -> bytes:
    """A 512x600 JPEG photo: more than twice the photo model's resize (256), so decoded at half size."""
    return encode(photo("astronaut").resize((512, 600), Image.Resampling.LANCZOS), "JPEG", quality=90)


async def v2_probabilities(client: httpx.AsyncClient, model: str, x: np.ndarray) -> np.ndarray:
    request = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": "logits"}],
    }
    r = await client.post(f"/v2/models/{model}/infer", content=json.dumps(request))
    assert r.status_code == 200, r.text
    logits = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float64)
    e = np.exp(logits - logits.max())
    return np.asarray(e / e.sum())


async def reproduce(client: httpx.AsyncClient, data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """/classify's answer for `data`, and the client's own /v2 probabilities, after checking they agree."""
    pre = (await client.get(f"/models/{PHOTO_MODEL}")).json()["preprocessing"]
    r = await client.post(
        "/classify", params={"top_k": 5}, content=data, headers={"content-type": "image/jpeg"}
    )
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    probs = await v2_probabilities(client, PHOTO_MODEL, published_tensor(data, pre))
    served = result["predictions"]
    assert int(np.argmax(probs)) == served[0]["index"]
    for p in served:
        assert abs(probs[p["index"]] - p["score"]) < 1e-5, (p, probs[p["index"]])
    return result, probs


async def test_a_v2_client_reproduces_classify_from_the_published_preprocessing(
    photo_zoo: Zoo, client_for: ClientFactory
) -> None:
    data = portrait()
    async with client_for(photo_zoo) as client:
        pre = (await client.get(f"/models/{PHOTO_MODEL}")).json()["preprocessing"]
        result, _ = await reproduce(client, data)
    assert pre["reduce_at_decode"] is True and pre["resize"] == 256
    assert (result["width"], result["height"]) == (512, 600)  # the upload's size, not the 256x300 decoded
    # The same pixels, not merely a close answer: the service's own tensor, to float32 rounding (one grey
    # level is 1/(255 std), about 0.0078 here).
    entry = photo_zoo.registry.get(PHOTO_MODEL)
    served = prepare(data, entry, max_pixels=40_000_000).tensor
    assert np.abs(served - published_tensor(data, pre)[0]).max() < 1e-5
    full = published_tensor(data, pre | {"reduce_at_decode": False})
    assert np.abs(served - full[0]).max() > 0.1  # and the reduction mattered: full decoding differs


async def test_with_reduction_switched_off_uploads_are_decoded_at_full_size(
    photo_zoo: Zoo, client_for: ClientFactory
) -> None:
    data = portrait()
    async with client_for(photo_zoo, reduce_at_decode=False) as client:
        pre = (await client.get(f"/models/{PHOTO_MODEL}")).json()["preprocessing"]
        result, full = await reproduce(client, data)
    assert pre["reduce_at_decode"] is False
    assert (result["width"], result["height"]) == (512, 600)
    async with client_for(photo_zoo) as client:
        _, reduced = await reproduce(client, data)
    assert np.abs(full - reduced).max() > 1e-4  # two different decodings, each reproduced exactly


async def test_compare_gives_each_model_the_pixels_of_its_classify(
    photo_zoo: Zoo, client_for: ClientFactory
) -> None:
    data = portrait()
    async with client_for(photo_zoo) as client:
        compared = await client.post(
            "/compare",
            params={"models": f"{PHOTO_MODEL},fmnist-lenet5", "top_k": 5},
            content=data,
            headers={"content-type": "image/jpeg"},
        )
        jpeg = {"content-type": "image/jpeg"}
        alone = {
            name: (
                await client.post("/classify", params={"model": name, "top_k": 5}, content=data, headers=jpeg)
            ).json()
            for name in (PHOTO_MODEL, "fmnist-lenet5")
        }
    assert compared.status_code == 200, compared.text
    body = compared.json()
    assert (body["image"]["width"], body["image"]["height"]) == (512, 600)
    for answer in body["models"]:  # lenet5 (resize 28) decodes at 1/8, the photo model at 1/2
        expected = alone[answer["model"]]["results"][0]["predictions"]
        assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in expected]
        for got, want in zip(answer["predictions"], expected, strict=True):
            assert abs(got["score"] - want["score"]) < 1e-6
