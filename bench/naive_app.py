"""(c) What a user would otherwise write: FastAPI + PyTorch eager + torchvision transforms, ResNet-50.

The handler is `async def` doing its work inline, as in most tutorials, so the server answers one request
at a time. Random weights (torchvision's initialisation), as for the convzoo artifact: speed does not
depend on the weights. Torch uses BENCH_TORCH_THREADS threads (default: its own choice, one per core).
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
import torchvision
from fastapi import FastAPI, Request
from PIL import Image
from torchvision import transforms


def create_app() -> FastAPI:
    threads = os.environ.get("BENCH_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        image = Image.open(io.BytesIO(await request.body())).convert("RGB")
        batch = preprocess(image).unsqueeze(0)
        with torch.no_grad():
            probs = torch.softmax(model(batch), dim=1)[0]
        top = torch.topk(probs, 5)
        return {
            "predictions": [
                {"index": int(i), "score": float(s)}
                for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
        }

    return app
