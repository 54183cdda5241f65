"""LitServe: one API server process and one inference worker, max_batch_size 32, batch_timeout 1 ms.
The image comes as a multipart upload (LitServe reads a form or JSON, not a raw body); the worker
preprocesses it and classifies with convzoo's registry entry and session.

`python -m bench.peers.litserve_peer --port P` (in the peers' virtualenv).
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls
import numpy as np

from bench.peers.common import MAX_BATCH, MAX_DELAY_US, Classifier

FIELD = "image"  # the multipart field the bench sends


class Api(ls.LitAPI):  # type: ignore[misc]  # untyped base class
    def setup(self, device: str) -> None:
        self.classifier = Classifier()

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe passes the form
        upload = request[FIELD]
        data = upload.file.read() if hasattr(upload, "file") else bytes(upload)
        return self.classifier.tensor(data)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classifier.logits(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return self.classifier.answer(output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    a = parser.parse_args()
    api = Api(max_batch_size=MAX_BATCH, batch_timeout=MAX_DELAY_US / 1e6, api_path="/classify")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=30)
    server.run(host="127.0.0.1", port=a.port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
