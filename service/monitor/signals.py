"""What one batch's answers say about the inputs, per image: the predicted class, its confidence, the
entropy and energy of the output, the input's border and brightness; and, against a version's reference,
an out-of-distribution score and whether the answer is `unusual`.

Computed where the request is answered (a front, or the service alone), once per batch, on arrays the
answer has anyway: a handful of NumPy operations on N x classes and N x C x H x W.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.monitor import statistics as st
from service.registry import Preprocessing


@dataclass(frozen=True)
class Signals:
    """One value per image of a batch."""

    classes: np.ndarray
    confidence: np.ndarray  # top-1 softmax probability
    entropy: np.ndarray  # of the softmax, nats
    energy: np.ndarray  # -logsumexp of the logits
    border: np.ndarray  # mean of the input tensor's outer ring (normalised units)
    brightness: np.ndarray  # mean pixel value of the input, 0..1


def of_batch(logits: np.ndarray, probs: np.ndarray, batch: np.ndarray, pre: Preprocessing) -> Signals:
    # brightness back in pixel units: the normalisation (x - mean) / std undone on the channel means
    channel_means = batch.mean(axis=(2, 3)) * np.asarray(pre.std) + np.asarray(pre.mean)
    return Signals(
        classes=probs.argmax(axis=-1),
        confidence=probs.max(axis=-1),
        entropy=st.entropy(probs),
        energy=st.energy(logits),
        border=st.border(batch),
        brightness=channel_means.mean(axis=-1),
    )


class Seen(NamedTuple):
    """One answered image, as the service's monitor aggregates it (a JSON list over the link)."""

    model: str
    version: str
    cls: int
    confidence: float
    entropy: float
    energy: float
    border: float
    brightness: float
    score: float  # out-of-distribution score; -1 without a reference
    unusual: int  # 1, 0, or -1 without a reference
    width: int
    height: int
    grey: int
    rotated: int


@dataclass(frozen=True)
class Upload:
    """What the monitor records of an image beside its tensor."""

    width: int
    height: int
    grey: bool
    rotated: bool
