"""TorchServe's stock `image_classifier` handler, as its users deploy it: PIL.Image.open and torchvision's
Resize(256)/CenterCrop(224)/ToTensor/Normalize (ImageNet's mean and std) per image, softmax and top-5 with
the labels of index_to_name.json. The model is convzoo's ONNX file, which the stock BaseHandler opens as
an ONNX Runtime session (its own session options: one intra-op thread per core) but never runs: its
inference() calls the model like a torch module. TorchServe's documentation has users override
inference() for ONNX; that override, the one method below, is the only change.

The archive is made by `python -m bench.peers.torchserve_peer --handler stock` (the model's .onnx as the
serialized file, index_to_name.json as an extra file).
"""

from __future__ import annotations

from typing import Any

import torch
from ts.torch_handler.image_classifier import ImageClassifier


class OnnxImageClassifier(ImageClassifier):  # type: ignore[misc]  # untyped base class
    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        session = self.model
        feed = {session.get_inputs()[0].name: data.cpu().numpy()}
        return torch.from_numpy(session.run(None, feed)[0])
