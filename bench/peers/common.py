"""What every peer server runs, inside the peers' own virtualenv: convzoo's registry entry, its ONNX Runtime
session (the service's own loader and session options), its preprocessing and its top-5 answer.

A peer process reads the same CONVZOO_* variables the bench gives convzoo (registry, model directory, the
model as CONVZOO_PRELOAD), so every server classifies with exactly the same model and tensors.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from service.compute.runtime import LoadedModel, load_model
from service.core.registry import ModelEntry, load_registry
from service.core.settings import Settings
from service.images import preprocess

# The batching every server is configured with (convzoo's defaults): at most 32 images, 1 ms queue delay.
MAX_BATCH = 32
MAX_DELAY_US = 1000
TOP_K = 5
# BENCH_PEER_IMAGE_PATH=usual: the peer prepares images the way its users usually do (`usual_tensor`)
# instead of with convzoo's preprocessing.
IMAGE_PATH = "BENCH_PEER_IMAGE_PATH"


def usual_tensor(entry: ModelEntry) -> Callable[[bytes], np.ndarray]:
    """The image path of the frameworks' tutorials: PIL.Image.open, convert("RGB") (a full decode) and
    torchvision's Resize(256)/CenterCrop(224)/ToTensor/Normalize, with the model's mean and std."""
    from torchvision import transforms

    steps = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=entry.preprocessing.mean, std=entry.preprocessing.std),
        ]
    )

    def tensor(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return np.asarray(steps(image).numpy())

    return tensor


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
        self.usual = usual_tensor(self.entry) if os.environ.get(IMAGE_PATH) == "usual" else None

    def tensor(self, data: bytes) -> np.ndarray:
        if self.usual is not None:
            return self.usual(data)
        # convzoo's decode: reduced in size where the entry allows it, as /classify does
        draft = preprocess.draft_size(self.entry.preprocessing)
        image = preprocess.decode(data, max_pixels=self.settings.max_image_pixels, draft_size=draft)
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
