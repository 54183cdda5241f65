"""BentoML: one service worker whose API is batchable (adaptive batching, at most 32 images; BentoML
has no fixed queue delay, only a latency ceiling, left at its default). The image comes as a multipart
upload; the worker preprocesses and classifies with convzoo's registry entry and session.

`bentoml serve bench.peers.bentoml_peer:Classify --host 127.0.0.1 --port P` (in the peers' virtualenv).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from bench.peers.common import MAX_BATCH, Classifier


@bentoml.service(workers=1, traffic={"timeout": 30})
class Classify:
    def __init__(self) -> None:
        self.classifier = Classifier()

    @bentoml.api(route="/classify", batchable=True, max_batch_size=MAX_BATCH)  # type: ignore[untyped-decorator]
    def classify(self, image: list[Path]) -> list[dict[str, Any]]:
        batch = np.stack([self.classifier.tensor(p.read_bytes()) for p in image])
        return [self.classifier.answer(row) for row in self.classifier.logits(batch)]
