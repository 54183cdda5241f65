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
from typing import Any

import numpy as np

from service.api.uploads import Upload
from service.core.errors import DeadlineExceeded, ImageTooLarge, InferenceFailed, InvalidParameter
from service.core.registry import ModelEntry
from service.core.settings import Settings
from service.images.postprocess import ranked_entries, softmax
from service.images.preprocess import ROW_COST, decode_upload, draft_size, to_tensor
from service.interfaces import Models
from service.monitor.signals import Upload as Seen
from service.monitor.watch import Watch
from service.rollouts import versions
from service.server.preprocess_pool import header_size, inline
from service.telemetry import tracing


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray
    width: int
    height: int
    decode_ms: float
    preprocess_ms: float
    grey: bool = False  # the upload's own pixels, before conversion to the model's colour mode
    rotated: bool = False  # EXIF-rotated


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def prepare(data: bytes, entry: ModelEntry, max_pixels: int) -> Prepared:
    t0 = time.perf_counter()
    decoded = tracing.traced("decode", decode_upload)(
        data, max_pixels=max_pixels, draft_size=draft_size(entry.preprocessing)
    )
    t1 = time.perf_counter()
    tensor = tracing.traced("preprocess", to_tensor)(decoded.image, entry.preprocessing)
    t2 = time.perf_counter()
    grey = decoded.image.mode in _GREY_MODES
    return Prepared(
        tensor, decoded.width, decoded.height, (t1 - t0) * 1e3, (t2 - t1) * 1e3, grey, decoded.rotated
    )


def request_pixels(uploads: list[bytes]) -> int:
    """The pixels of a request's images together, from their headers (no pixels decoded)."""
    return sum(w * (h + ROW_COST) for w, h in map(header_size, uploads))


async def prepare_all(
    uploads: list[Upload],
    entry: ModelEntry,
    max_pixels: int,
    pool: Executor,
    *,
    deadline: float | None = None,
) -> list[Prepared]:
    """Every upload's tensor, in upload order. A tiny image (the preprocessing pool's `inline` lane) is
    prepared right here on the event loop: its cost is bounded from its header to less than a thread
    hand-off's.

    The request has one budget: its images' pixels together are at most `max_pixels` (24 images of
    36 Mpx in one multipart body once cost 4 s of CPU), and the `deadline` stops the preparation too:
    images not started by then are never decoded."""
    if len(uploads) == 1 and inline(uploads[0].data):
        return [prepare(u.data, entry, max_pixels) for u in uploads]
    loop = asyncio.get_running_loop()
    if len(uploads) > 1:
        pixels = await loop.run_in_executor(pool, request_pixels, [u.data for u in uploads])
        if pixels > max_pixels:
            raise ImageTooLarge(
                f"The {len(uploads)} images have {pixels} pixels together; one request may have at most "
                f"{max_pixels}."
            )
    jobs = [loop.run_in_executor(pool, tracing.bind(prepare), u.data, entry, max_pixels) for u in uploads]
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        results = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout)
    except TimeoutError:
        raise DeadlineExceeded("The request's images were not prepared within the request timeout.") from None
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
    watch: Watch | None = None,
) -> dict[str, Any]:
    """The /classify answer for `uploads` (a ClassifyResponse without `selection`), as JSON-ready data.

    `state` is the request's scope state: the request log reads the model's timings from it. `watch`
    scores each answer against the model version's reference and records it (service/monitor/)."""
    prepared = await prepare_all(uploads, entry, settings.max_image_pixels, pool, deadline=deadline)
    batch = prepared[0].tensor[None] if len(prepared) == 1 else np.stack([p.tensor for p in prepared])
    logits, timings = await tracing.infer(models, entry.name, batch, deadline=deadline)
    state["timings"] = {"queue": timings.queue_ms, "inference": timings.inference_ms}
    probs = softmax(logits)
    if not np.isfinite(probs).all():  # a broken model: no JSON number can say NaN
        raise InferenceFailed(f"Model {entry.name} produced scores that are not finite numbers.")
    labels = models.labels(entry.name)
    seen = [Seen(p.width, p.height, p.grey, p.rotated) for p in prepared]
    fields = watch.answered(entry, logits, probs, batch, seen) if watch is not None else [{} for _ in seen]
    results = [
        {
            "filename": u.filename,
            "width": p.width,
            "height": p.height,
            "predictions": ranked_entries(row, labels, top_k),
            **extra,
        }
        for u, p, row, extra in zip(uploads, prepared, probs, fields, strict=True)
    ]
    answer = {
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
    if watch is not None:
        watch.sample("/classify", answer, [u.data for u in uploads])
    return answer
