"""The work of one /classify request once its model and images are known: decode and preprocess, infer,
rank. Shared by the route (service/api/routes/classify.py) and the hot path (service/api/hot_path.py), so
that both answer alike, byte for byte but for the timings.

The answer is built as plain JSON-ready data: the hot path writes it straight out, the route validates it
into `ClassifyResponse` (the documented schema, which a test holds the hot path's answers to as well).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from service import tracing, versions
from service.api.uploads import Upload
from service.batcher import InferTimings
from service.errors import InferenceFailed, InvalidParameter
from service.postprocess import ranked_entries, softmax
from service.preprocess import decode_upload, draft_size, to_tensor
from service.preprocess_pool import inline
from service.registry import ModelEntry
from service.settings import Settings


class Models(Protocol):
    """What a /classify answer needs of the models: the service's manager, or a front process's link to
    it (service/fronts/link.py)."""

    async def infer(
        self, name: str, batch: np.ndarray, *, deadline: float
    ) -> tuple[np.ndarray, InferTimings]:
        """N preprocessed samples through the model's batcher; logits N x classes."""
        ...

    def labels(self, name: str) -> list[str]: ...


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray
    width: int
    height: int
    decode_ms: float
    preprocess_ms: float


def prepare(data: bytes, entry: ModelEntry, max_pixels: int) -> Prepared:
    t0 = time.perf_counter()
    decoded = tracing.traced("decode", decode_upload)(
        data, max_pixels=max_pixels, draft_size=draft_size(entry.preprocessing)
    )
    t1 = time.perf_counter()
    tensor = tracing.traced("preprocess", to_tensor)(decoded.image, entry.preprocessing)
    t2 = time.perf_counter()
    return Prepared(tensor, decoded.width, decoded.height, (t1 - t0) * 1e3, (t2 - t1) * 1e3)


async def prepare_all(
    uploads: list[Upload], entry: ModelEntry, max_pixels: int, pool: Executor
) -> list[Prepared]:
    """Every upload's tensor, in upload order. A tiny image (the preprocessing pool's `inline` lane) is
    prepared right here on the event loop: its cost is bounded from its header to less than a thread
    hand-off's."""
    if len(uploads) == 1 and inline(uploads[0].data):
        return [prepare(u.data, entry, max_pixels) for u in uploads]
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(pool, tracing.bind(prepare), u.data, entry, max_pixels) for u in uploads]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for r in results:  # the first failing image, in upload order, decides the error
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if isinstance(r, Prepared)]


def check_top_k(entry: ModelEntry, top_k: int) -> None:
    if not 1 <= top_k <= entry.num_classes:
        raise InvalidParameter(f"top_k must be between 1 and {entry.num_classes} for model {entry.name}.")


async def classify(
    models: Models,
    settings: Settings,
    pool: Executor,
    entry: ModelEntry,
    uploads: list[Upload],
    top_k: int,
    state: dict[str, Any],
    *,
    started: float,
    deadline: float,
) -> dict[str, Any]:
    """The /classify answer for `uploads` (a ClassifyResponse without `selection`), as JSON-ready data.

    `state` is the request's scope state: the request log reads the model's timings from it."""
    prepared = await prepare_all(uploads, entry, settings.max_image_pixels, pool)
    batch = prepared[0].tensor[None] if len(prepared) == 1 else np.stack([p.tensor for p in prepared])
    logits, timings = await tracing.infer(models, entry.name, batch, deadline=deadline)
    state["timings"] = {"queue": timings.queue_ms, "inference": timings.inference_ms}
    probs = softmax(logits)
    if not np.isfinite(probs).all():  # a broken model: no JSON number can say NaN
        raise InferenceFailed(f"Model {entry.name} produced scores that are not finite numbers.")
    labels = models.labels(entry.name)
    results = [
        {
            "filename": u.filename,
            "width": p.width,
            "height": p.height,
            "predictions": ranked_entries(row, labels, top_k),
        }
        for u, p, row in zip(uploads, prepared, probs, strict=True)
    ]
    return {
        "model": versions.split(entry.name)[0],
        "version": timings.version or entry.version,  # the version that answered (a canary's, a pinned one)
        "results": results,
        "timing_ms": {
            "decode": round(sum(p.decode_ms for p in prepared), 3),
            "preprocess": round(sum(p.preprocess_ms for p in prepared), 3),
            "queue": round(timings.queue_ms, 3),
            "inference": round(timings.inference_ms, 3),
            "total": round((time.perf_counter() - started) * 1e3, 3),
        },
    }
