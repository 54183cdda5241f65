"""What every peer server runs, inside the peers' own virtualenv: convzoo's registry entry, its ONNX Runtime
session (the service's own loader and session options), its preprocessing and its top-5 answer.

A peer process reads the same CONVZOO_* variables the bench gives convzoo (registry, model directory, the
model as CONVZOO_PRELOAD), so every server classifies with exactly the same model and tensors.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from service.compute.runtime import LoadedModel, load_model
from service.core.registry import load_registry
from service.core.settings import Settings
from service.images import preprocess

# The batching every server is configured with (convzoo's defaults): at most 32 images, 1 ms queue delay.
MAX_BATCH = 32
MAX_DELAY_US = 1000
TOP_K = 5


class Classifier:
    """One model as convzoo serves it: bytes in, top-5 out."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.name = os.environ["CONVZOO_PRELOAD"]
        registry = load_registry(self.settings.registry_path)
        self.entry = registry.get(self.name)
        self.labels = registry.labels_of(self.name)
        path = self.settings.models_dir / self.entry.artifact.path
        self.model: LoadedModel = load_model(path, self.entry, self.settings, max_batch_size=MAX_BATCH)

    def tensor(self, data: bytes) -> np.ndarray:
        image = preprocess.decode(data, max_pixels=self.settings.max_image_pixels)
        return preprocess.to_tensor(image, self.entry.preprocessing)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.model.run(batch)

    def answer(self, logits: np.ndarray) -> dict[str, Any]:
        """convzoo's answer for one image: the top-5 labels with softmax scores."""
        z = logits.astype(np.float64) - logits.max()
        probs = np.exp(z) / np.exp(z).sum()
        order = np.argsort(-probs, kind="stable")[:TOP_K]
        return {
            "model": self.name,
            "predictions": [
                {"index": int(i), "label": self.labels[i], "score": float(probs[i])} for i in order
            ],
        }

    def classify(self, images: list[bytes]) -> list[dict[str, Any]]:
        """A whole batch: preprocess each, one forward pass, one answer each."""
        logits = self.logits(np.stack([self.tensor(b) for b in images]))
        return [self.answer(row) for row in logits]
