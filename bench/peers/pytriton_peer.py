"""PyTriton: the Triton server it bundles, its dynamic batcher (max batch 32, 1 ms queue delay), one Python
model instance. The image comes as a BYTES tensor in a KServe v2 request (binary-data extension; bench/peers/__init__.py); the
instance preprocesses and classifies with convzoo's registry entry and session, and answers the top-5
indices and scores as tensors (Triton's own JSON answer).

`python -m bench.peers.pytriton_peer --port P` (in the peers' virtualenv; gRPC and metrics on P+1, P+2).
"""

from __future__ import annotations

import argparse
import os
import sysconfig

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.peers.common import MAX_BATCH, MAX_DELAY_US, TOP_K, Classifier

MODEL = "classifier"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    a = parser.parse_args()
    # The model's Python stub, started by the bundled server, must load this interpreter's libpython
    # (not a system one of the same version, whose C layer differs from this standard library).
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    classifier = Classifier()

    @batch  # type: ignore[untyped-decorator]
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        logits = classifier.logits(np.stack([classifier.tensor(bytes(row[0])) for row in image]))
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_K]
        return {
            "index": order.astype(np.int64),
            "score": np.take_along_axis(probs, order, 1).astype(np.float32),
        }

    config = TritonConfig(
        http_address="127.0.0.1", http_port=a.port, grpc_port=a.port + 1, metrics_port=a.port + 2
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="index", dtype=np.int64, shape=(TOP_K,)),
                Tensor(name="score", dtype=np.float32, shape=(TOP_K,)),
            ],
            config=ModelConfig(
                max_batch_size=MAX_BATCH, batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_DELAY_US)
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
