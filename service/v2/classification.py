"""The classification extension: an output answered as its top-k classes, `"value:index:label"`.

As Triton does, `value` is the output's own element (here the logit, not a softmax probability),
printed with six decimals. The ranking is the one `POST /classify` gives: by the softmax of the
same logits (a monotonic map of them), ties keeping the lower index first.
"""

from __future__ import annotations

import numpy as np

from service.images.postprocess import label_of, ranked, softmax
from service.v2 import datatypes
from service.v2.codec import Tensor
from service.v2.errors import bad_request


def top_k(tensor: Tensor, k: int, labels: list[str]) -> Tensor:
    """A BYTES tensor of shape [batch, min(k, classes)] from a [batch, classes] output."""
    if tensor.datatype == datatypes.BYTES or tensor.datatype == "BOOL" or tensor.array.ndim != 2:
        raise bad_request(f"output {tensor.name!r}: classification needs a numeric [batch, classes] output")
    scores = tensor.array
    count = min(k, scores.shape[1])
    # Ranked exactly as /classify ranks: a stable sort of the float64 softmax, descending, so that
    # ties (including probabilities that underflow alike) keep the lower index first.
    order = ranked(softmax(scores), count)
    rows = [
        [_entry(float(row[i]), int(i), labels) for i in idx] for row, idx in zip(scores, order, strict=True)
    ]
    array = np.empty((scores.shape[0], count), dtype=np.object_)
    for r, row_entries in enumerate(rows):
        for c, entry in enumerate(row_entries):
            array[r, c] = entry
    return Tensor(tensor.name, datatypes.BYTES, array)


def _entry(value: float, index: int, labels: list[str]) -> bytes:
    text = f"{value:f}:{index}"
    label = label_of(labels, index)
    if label is not None:
        text += f":{label}"
    return text.encode("utf-8")
