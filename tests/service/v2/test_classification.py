"""The classification extension's top-k strings."""

from __future__ import annotations

import numpy as np
import pytest

from service.v2.classification import top_k
from service.v2.codec import Tensor
from service.v2.errors import V2Error

LABELS = ["zero", "one", "two", "three"]


def _strings(tensor: Tensor) -> list[list[str]]:
    return [[bytes(e).decode() for e in row] for row in tensor.array]


def test_raw_values_best_first_with_labels() -> None:
    logits = np.array([[1.1, 3.3, 0.5, 2.4], [-1.0, -2.0, 7.25, 0.0]], dtype=np.float32)
    out = top_k(Tensor("logits", "FP32", logits), 2, LABELS)
    assert out.datatype == "BYTES" and out.array.shape == (2, 2)
    assert _strings(out) == [["3.300000:1:one", "2.400000:3:three"], ["7.250000:2:two", "0.000000:3:three"]]


def test_ties_keep_the_lower_index_and_k_is_clipped() -> None:
    logits = np.array([[2.0, 5.0, 5.0, 2.0]], dtype=np.float32)
    out = top_k(Tensor("logits", "FP32", logits), 10, LABELS)
    assert [s.split(":")[1] for s in _strings(out)[0]] == ["1", "2", "0", "3"]


def test_far_apart_logits_whose_probabilities_underflow_alike() -> None:
    # exp(-1000) and exp(-2000) are both 0.0 in float64: /classify sees a tie and keeps index order.
    logits = np.array([[0.0, -2000.0, -1000.0]], dtype=np.float32)
    out = top_k(Tensor("logits", "FP32", logits), 3, LABELS)
    assert [s.split(":")[1] for s in _strings(out)[0]] == ["0", "1", "2"]


def test_index_without_label() -> None:
    out = top_k(Tensor("logits", "FP32", np.array([[0.0, 1.0]], dtype=np.float32)), 1, [])
    assert _strings(out) == [["1.000000:1"]]


@pytest.mark.parametrize(
    "tensor",
    [
        Tensor("t", "BYTES", np.array([[b"a"]], dtype=np.object_)),
        Tensor("t", "FP32", np.zeros((2, 3, 4), dtype=np.float32)),
    ],
)
def test_needs_a_numeric_batch_of_classes(tensor: Tensor) -> None:
    with pytest.raises(V2Error) as info:
        top_k(tensor, 1, LABELS)
    assert info.value.status == 400
