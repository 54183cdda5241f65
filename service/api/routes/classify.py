"""POST /classify: images in, top-k softmax predictions out."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from service import tracing
from service.api.choice import ModelChoiceDep
from service.api.deps import ManagerDep, PreprocessPoolDep, SettingsDep
from service.errors import InvalidParameter, UnsupportedMediaType
from service.preprocess import ACCEPTED_MEDIA_TYPES, decode, to_tensor
from service.registry import ModelEntry
from service.settings import Settings

router = APIRouter(tags=["classify"])


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray
    width: int
    height: int
    decode_ms: float
    preprocess_ms: float


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_uploads(request: Request, settings: Settings) -> list[Upload]:
    media = _media_type(request)
    if media == "multipart/form-data":
        limit = settings.max_files_per_request
        async with request.form(max_files=limit, max_fields=limit) as form:
            files = form.getlist("file")
            uploads = []
            for part in files:
                if not isinstance(part, UploadFile):
                    raise InvalidParameter("Each `file` part must be a file upload, not a text field.")
                uploads.append(Upload(filename=part.filename, data=await part.read()))
        if not uploads:
            raise InvalidParameter("The multipart body has no part named `file`; send one or more images.")
        return uploads
    if media in ACCEPTED_MEDIA_TYPES:
        return [Upload(filename=None, data=await request.body())]
    shown = media or "none"
    raise UnsupportedMediaType(
        f"Content-Type {shown} is not accepted; send multipart/form-data with `file` parts, "
        f"or a raw body of type {', '.join(sorted(ACCEPTED_MEDIA_TYPES))}."
    )


def _prepare(data: bytes, entry: ModelEntry, max_pixels: int) -> Prepared:
    t0 = time.perf_counter()
    image = tracing.traced("decode", decode)(data, max_pixels=max_pixels, draft_size=entry.preprocessing.resize)
    t1 = time.perf_counter()
    tensor = tracing.traced("preprocess", to_tensor)(image, entry.preprocessing)
    t2 = time.perf_counter()
    return Prepared(tensor, image.width, image.height, (t1 - t0) * 1e3, (t2 - t1) * 1e3)


async def _prepare_all(
    uploads: list[Upload], entry: ModelEntry, settings: Settings, pool: ThreadPoolExecutor
) -> list[Prepared]:
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(pool, tracing.bind(_prepare), u.data, entry, settings.max_image_pixels) for u in uploads]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for r in results:  # the first failing image, in upload order, decides the error
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if isinstance(r, Prepared)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def top_predictions(probs: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in order]


@router.post("/classify", summary="Classify one or more images")
async def classify(
    request: Request,
    settings: SettingsDep,
    manager: ManagerDep,
    pool: PreprocessPoolDep,
    choice: ModelChoiceDep,
    top_k: Annotated[int, Query(ge=1, description="Predictions per image, 1..num_classes")] = 5,
) -> dict[str, Any]:
    started = time.perf_counter()
    deadline = time.monotonic() + settings.request_timeout_s
    name = choice.name
    request.state.model = name  # for the request log and metrics: model=auto resolves here
    entry = manager.entry(name)
    if top_k > entry.num_classes:
        raise InvalidParameter(f"top_k must be between 1 and {entry.num_classes} for model {name}.")
    uploads = await _read_uploads(request, settings)
    prepared = await _prepare_all(uploads, entry, settings, pool)
    batch = np.stack([p.tensor for p in prepared])
    logits, timings = await tracing.infer(manager, name, batch, deadline=deadline)
    request.state.timings = {"queue": timings.queue_ms, "inference": timings.inference_ms}  # for the request log
    probs = softmax(logits)
    labels = manager.labels(name)
    results = [
        {
            "filename": u.filename,
            "width": p.width,
            "height": p.height,
            "predictions": top_predictions(row, labels, top_k),
        }
        for u, p, row in zip(uploads, prepared, probs, strict=True)
    ]
    selection = {"selection": choice.selection} if choice.selection is not None else {}
    return {
        "model": entry.name,
        "version": entry.version,
        **selection,
        "results": results,
        "timing_ms": {
            "decode": round(sum(p.decode_ms for p in prepared), 3),
            "preprocess": round(sum(p.preprocess_ms for p in prepared), 3),
            "queue": round(timings.queue_ms, 3),
            "inference": round(timings.inference_ms, 3),
            "total": round((time.perf_counter() - started) * 1e3, 3),
        },
    }
