"""POST /classify: images in, top-k softmax predictions out."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request

from service import tracing
from service.api.choice import ModelChoiceDep
from service.api.deps import ServicesDep
from service.api.schemas import ClassifyResponse, ClassifyTiming, ImageResult, SelectionReport
from service.api.uploads import Upload, read_uploads
from service.errors import InvalidParameter
from service.postprocess import softmax, top_predictions
from service.preprocess import decode, to_tensor
from service.registry import ModelEntry
from service.settings import Settings

router = APIRouter(tags=["classify"])


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray
    width: int
    height: int
    decode_ms: float
    preprocess_ms: float


def _prepare(data: bytes, entry: ModelEntry, max_pixels: int) -> Prepared:
    t0 = time.perf_counter()
    image = tracing.traced("decode", decode)(
        data, max_pixels=max_pixels, draft_size=entry.preprocessing.resize
    )
    t1 = time.perf_counter()
    tensor = tracing.traced("preprocess", to_tensor)(image, entry.preprocessing)
    t2 = time.perf_counter()
    return Prepared(tensor, image.width, image.height, (t1 - t0) * 1e3, (t2 - t1) * 1e3)


async def _prepare_all(
    uploads: list[Upload], entry: ModelEntry, settings: Settings, pool: ThreadPoolExecutor
) -> list[Prepared]:
    loop = asyncio.get_running_loop()
    jobs = [
        loop.run_in_executor(pool, tracing.bind(_prepare), u.data, entry, settings.max_image_pixels)
        for u in uploads
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for r in results:  # the first failing image, in upload order, decides the error
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if isinstance(r, Prepared)]


@router.post("/classify", summary="Classify one or more images", response_model_exclude_unset=True)
async def classify(
    request: Request,
    services: ServicesDep,
    choice: ModelChoiceDep,
    top_k: Annotated[int, Query(ge=1, description="Predictions per image, 1..num_classes")] = 5,
) -> ClassifyResponse:
    started = time.perf_counter()
    settings, manager, pool = services.settings, services.manager, services.preprocess_pool
    deadline = time.monotonic() + settings.request_timeout_s
    name = choice.name
    request.state.model = name  # for the request log and metrics: model=auto resolves here
    entry = manager.entry(name)
    if top_k > entry.num_classes:
        raise InvalidParameter(f"top_k must be between 1 and {entry.num_classes} for model {name}.")
    uploads = await read_uploads(request, settings)
    prepared = await _prepare_all(uploads, entry, settings, pool)
    batch = np.stack([p.tensor for p in prepared])
    logits, timings = await tracing.infer(manager, name, batch, deadline=deadline)
    request.state.timings = {
        "queue": timings.queue_ms,
        "inference": timings.inference_ms,
    }  # for the request log
    probs = softmax(logits)
    labels = manager.labels(name)
    results = [
        ImageResult(
            filename=u.filename,
            width=p.width,
            height=p.height,
            predictions=top_predictions(row, labels, top_k),
        )
        for u, p, row in zip(uploads, prepared, probs, strict=True)
    ]
    response = ClassifyResponse(
        model=entry.name,
        version=entry.version,
        results=results,
        timing_ms=ClassifyTiming(
            decode=round(sum(p.decode_ms for p in prepared), 3),
            preprocess=round(sum(p.preprocess_ms for p in prepared), 3),
            queue=round(timings.queue_ms, 3),
            inference=round(timings.inference_ms, 3),
            total=round((time.perf_counter() - started) * 1e3, 3),
        ),
    )
    if choice.selection is not None:  # set only for model=auto: the member is absent otherwise
        response.selection = SelectionReport.model_validate(choice.selection)
    return response
