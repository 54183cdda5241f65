"""POST /classify: images in, top-k softmax predictions out.

Its common form (one raw image body, a named model) is answered by the hot path before the router
(service/api/hot_path.py); both do the work in service/api/classification.py.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.api import classification
from service.api.choice import ModelChoiceDep
from service.api.deps import InferenceDep
from service.api.schemas import ClassifyResponse
from service.api.uploads import read_uploads

router = APIRouter(tags=["classify"])


@router.post("/classify", summary="Classify one or more images", response_model_exclude_unset=True)
async def classify(
    request: Request,
    services: InferenceDep,
    choice: ModelChoiceDep,
    top_k: Annotated[int, Query(ge=1, description="Predictions per image, 1..num_classes")] = 5,
) -> ClassifyResponse:
    started = time.perf_counter()
    deadline = time.monotonic() + services.settings.request_timeout_s
    request.state.model = choice.name  # for the request log and metrics: model=auto resolves here
    entry = services.manager.entry(choice.name)
    classification.check_top_k(entry, top_k)
    uploads = await read_uploads(request, services.settings)
    answer = await classification.classify(
        services.manager,
        services.settings,
        services.preprocess_pool,
        entry,
        uploads,
        top_k,
        request.scope["state"],
        started=started,
        deadline=deadline,
        watch=services.monitor,
    )
    if choice.selection is not None:  # set only for model=auto: the member is absent otherwise
        answer["selection"] = choice.selection
    return ClassifyResponse.model_validate(answer)
