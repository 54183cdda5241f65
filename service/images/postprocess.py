"""From logits to answers: softmax, the top-k ranking and the label of each class (beside preprocess.py).

`POST /classify`, `POST /compare` and the `/v2` classification extension rank through `ranked`, so that all
three order classes alike: a stable sort of the float64 softmax, descending, ties keeping the lower index.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel


class Prediction(BaseModel):
    """One class of a ranking: its output index, its label and its softmax probability."""

    index: int
    label: str
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis, in float64 (float32 would round small ones to 0 and tie them)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def ranked(probs: np.ndarray, k: int) -> np.ndarray:
    """The indices of the `k` highest values along the last axis, highest first, ties by lower index."""
    order: np.ndarray = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return order


def label_of(labels: list[str], index: int) -> str | None:
    """The class's label, or None for an index the label set does not cover."""
    return labels[index] if 0 <= index < len(labels) else None


def ranked_entries(probs: np.ndarray, labels: list[str], k: int) -> list[dict[str, object]]:
    """The `k` most probable classes of one image's probabilities, as JSON-ready Prediction data."""
    return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in ranked(probs, k)]


def top_predictions(probs: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """The `k` most probable classes of one image's probabilities."""
    return [Prediction.model_validate(e) for e in ranked_entries(probs, labels, k)]
