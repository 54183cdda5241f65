"""POST /compare: one image through several models at once, with how far they agree."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request

from service.api.deps import ServicesDep
from service.api.schemas import (
    AgreedTop1,
    Agreement,
    CompareAnswer,
    CompareErrorDetail,
    CompareFailure,
    CompareImage,
    CompareResponse,
    CompareTiming,
    CompareTotals,
    PairAgreement,
    Prediction,
)
from service.api.uploads import read_uploads
from service.core.errors import InvalidParameter, ServiceError, problem_of
from service.core.settings import Settings
from service.images.postprocess import softmax, top_predictions
from service.images.preprocess import Tensors, tensors_of
from service.interfaces import Models

router = APIRouter(tags=["compare"])

ALL = "all"


def _names(models: str, dataset: str | None, manager: Models) -> list[str]:
    if models.strip() == ALL:
        datasets = sorted({s.entry.dataset for s in manager.states()})
        if dataset is None and len(datasets) > 1:
            raise InvalidParameter(f"models=all needs dataset= one of: {', '.join(datasets)}.")
        chosen = dataset or datasets[0]
        if chosen not in datasets:
            raise InvalidParameter(f"Unknown dataset {chosen!r}; the registry has: {', '.join(datasets)}.")
        return [s.entry.name for s in manager.states() if s.entry.dataset == chosen]
    if dataset is not None:
        raise InvalidParameter("dataset applies only with models=all.")
    names = list(dict.fromkeys(n.strip() for n in models.split(",") if n.strip()))
    if not names:
        raise InvalidParameter("models must name one or more models, comma-separated, or be `all`.")
    for name in names:
        manager.entry(name)  # an unknown name is the client's mistake: 404 for the request
    return names


def label_groups(names: list[str], manager: Models) -> list[list[str]]:
    """The models grouped by the label set they classify into, in request order."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in names:
        groups.setdefault(tuple(manager.labels(name)), []).append(name)
    return list(groups.values())


def unrelated(answered: int) -> Agreement:
    """No agreement across label sets: a Fashion-MNIST "Bag" and an ImageNet class never agree, and a
    class index of one model names another class in the other."""
    return Agreement(answered=answered, top1=None, share_top1=0, unanimous=False, pairwise=[])


def _failure(name: str, exc: ServiceError) -> CompareFailure:
    p = problem_of(exc)
    return CompareFailure(
        model=name, error=CompareErrorDetail(status=p.status, title=p.title, detail=exc.detail)
    )


async def _one(
    name: str,
    tensor: np.ndarray,
    preprocess_ms: float,
    *,
    top_k: int,
    manager: Models,
    deadline: float,
) -> CompareAnswer | CompareFailure:
    started = time.perf_counter()
    try:
        entry = manager.entry(name)
        await manager.ensure_loaded(name)  # a lazy load is timed apart from the inference
        load_ms = (time.perf_counter() - started) * 1e3
        logits, timings = await manager.infer(name, tensor[None], deadline=deadline)
    except ServiceError as exc:
        return _failure(name, exc)
    probs = softmax(logits)[0]
    return CompareAnswer(
        model=name,
        version=timings.version or entry.version,
        top1=entry.metrics.top1,
        predictions=top_predictions(probs, manager.labels(name), min(top_k, entry.num_classes)),
        timing_ms=CompareTiming(
            load=round(load_ms, 3),
            preprocess=round(preprocess_ms, 3),
            queue=round(timings.queue_ms, 3),
            inference=round(timings.inference_ms, 3),
            total=round((time.perf_counter() - started) * 1e3, 3),
        ),
    )


def agreement(answers: Sequence[tuple[str, list[Prediction]]]) -> Agreement:
    """How many answering models share the most common top-1, and the overlap of every pair.

    `answers`: (model, its top-k predictions) of the models that answered, in request order."""
    tops = {model: predictions[0] for model, predictions in answers}
    counts = Counter((p.index, p.label) for p in tops.values())
    scores: dict[int, float] = {}
    for p in tops.values():
        scores[p.index] = scores.get(p.index, 0.0) + p.score
    pairs = []
    for (a, pa), (b, pb) in itertools.combinations(answers, 2):
        ka = {p.index for p in pa}
        kb = {p.index for p in pb}
        pairs.append(
            PairAgreement(
                models=[a, b],
                same_top1=tops[a].index == tops[b].index,
                topk_overlap=round(len(ka & kb) / max(len(ka | kb), 1), 4),  # Jaccard of the top-k sets
            )
        )
    if not counts:
        return Agreement(answered=0, top1=None, share_top1=0, unanimous=False, pairwise=pairs)
    # Most common top-1; a tie goes to the higher summed score, then the lower class index.
    (index, label), share = min(counts.items(), key=lambda kv: (-kv[1], -scores[kv[0][0]], kv[0][0]))
    agreeing = sum(p.same_top1 for p in pairs)
    return Agreement(
        answered=len(answers),
        top1=AgreedTop1(index=index, label=label, models=[m for m, p in tops.items() if p.index == index]),
        share_top1=share,
        unanimous=share == len(answers),
        distinct_top1=len(counts),
        pairwise_top1_agreement=round(agreeing / len(pairs), 4) if pairs else None,
        pairwise=pairs,
    )


@router.post(
    "/compare",
    summary="One image through several models concurrently, with their agreement",
    response_model_exclude_unset=True,  # the agreement's members that apply only when a model answered
)
async def compare(
    request: Request,
    services: ServicesDep,
    models: Annotated[str, Query(description="Comma-separated model names, or `all` (with dataset=)")],
    dataset: Annotated[str | None, Query(description="With models=all: the dataset")] = None,
    top_k: Annotated[int, Query(ge=1, description="Predictions per model")] = 5,
) -> CompareResponse:
    started = time.perf_counter()
    settings, manager, pool = services.settings, services.manager, services.preprocess_pool
    deadline = time.monotonic() + settings.request_timeout_s
    names = _names(models, dataset, manager)
    smallest = min(manager.entry(n).num_classes for n in names)
    if top_k > smallest:
        raise InvalidParameter(f"top_k must be between 1 and {smallest} for these models.")
    prepared, upload = await _prepare(request, settings, pool, names, manager)
    entries = await asyncio.gather(
        *(
            _one(n, tensor, ms, top_k=top_k, manager=manager, deadline=deadline)
            for n, tensor, ms in zip(names, prepared.tensors, prepared.preprocess_ms, strict=True)
        )
    )
    answers = [(e.model, e.predictions) for e in entries if isinstance(e, CompareAnswer)]
    groups = label_groups(names, manager)
    response = CompareResponse(
        image=CompareImage(filename=upload, width=prepared.size[0], height=prepared.size[1]),
        models=list(entries),
        agreement=agreement(answers) if len(groups) == 1 else unrelated(len(answers)),
        timing_ms=CompareTotals(
            decode=round(prepared.decode_ms, 3), total=round((time.perf_counter() - started) * 1e3, 3)
        ),
    )
    if len(groups) > 1:  # set only then: the member is absent otherwise
        response.label_sets_differ = groups
    return response


async def _prepare(
    request: Request, settings: Settings, pool: Executor, names: list[str], manager: Models
) -> tuple[Tensors, str | None]:
    """The one upload's tensor for each model, decoded once per distinct decoding (each model sees the
    pixels its /classify would: a 512x600 JPEG decodes at 256x300 for a resize of 256, at full size where
    reduction is off)."""
    uploads = await read_uploads(request, settings)
    if len(uploads) != 1:
        raise InvalidParameter(f"/compare takes exactly one image; {len(uploads)} were sent.")
    preprocessings = [manager.entry(n).preprocessing for n in names]
    loop = asyncio.get_running_loop()
    # A partial, not a lambda: the pool picks its lane from the upload it is given.
    prepared = await loop.run_in_executor(
        pool,
        functools.partial(tensors_of, uploads[0].data, preprocessings, max_pixels=settings.max_image_pixels),
    )
    return prepared, uploads[0].filename
