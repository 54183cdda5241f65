"""The servers users would pick instead of convzoo, run side by side with it by `make bench`.

Each peer serves the same ONNX file through the same ONNX Runtime session and preprocessing (convzoo's
registry entry, bench/peers/common.py) with the same batching (at most 32 images, 1 ms queue delay where
the server has one), one inference worker, one image per request. Each runs in the peers' own virtualenv
(.venv-peers, made by `make bench`), so their dependencies never touch the project's; its configuration
is its one file here. This module is what the bench itself needs: the catalog and the request bodies.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-peers"

BodyKind = Literal["raw", "multipart", "v2"]


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    distribution: str  # the package whose version the report names
    body: BodyKind  # how an image is sent: as the raw body, a multipart field, or a v2 BYTES tensor
    path: str  # the classify route
    ready: str  # answers 200 once the model is loaded
    start: tuple[str, ...]  # the command after the peers' interpreter directory; {port} {work} filled in
    ports: int = 1  # consecutive ports it binds
    env: tuple[tuple[str, str], ...] = ()  # variables of its process besides the bench's

    def command(self, port: int, work: Path) -> list[str]:
        bindir = VENV / "bin"
        first, *rest = self.start
        return [str(bindir / first), *(a.format(port=port, work=work) for a in rest)]


PEERS = (
    Peer(
        "torchserve",
        "TorchServe",
        "torchserve",
        "raw",
        "/predictions/classifier",
        "/ping",
        ("python", "-m", "bench.peers.torchserve_peer", "--port", "{port}", "--work", "{work}"),
        ports=3,
    ),
    Peer(
        "pytriton",
        "PyTriton",
        "nvidia-pytriton",
        "v2",
        "/v2/models/classifier/infer",
        "/v2/models/classifier/ready",
        ("python", "-m", "bench.peers.pytriton_peer", "--port", "{port}"),
        ports=3,
    ),
    Peer(
        "litserve",
        "LitServe",
        "litserve",
        "multipart",
        "/classify",
        "/health",
        ("python", "-m", "bench.peers.litserve_peer", "--port", "{port}"),
    ),
    Peer(
        "bentoml",
        "BentoML",
        "bentoml",
        "multipart",
        "/classify",
        "/readyz",
        ("bentoml", "serve", "bench.peers.bentoml_peer:Classify", "--host", "127.0.0.1", "--port", "{port}"),
    ),
)
FIELD = "image"  # the multipart field name every multipart peer reads


def by_key(keys: list[str]) -> list[Peer]:
    known = {p.key: p for p in PEERS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; known: {', '.join(known)}")
    return [known[k] for k in keys]


def request(
    kind: BodyKind, image: bytes, content_type: str
) -> tuple[bytes, str, tuple[tuple[str, str], ...]]:
    """The request body, its content type and extra headers that carry `image` to a peer."""
    if kind == "raw":
        return image, content_type, ()
    if kind == "multipart":
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{FIELD}"; filename="image"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        return (
            head + image + f"\r\n--{boundary}--\r\n".encode(),
            f"multipart/form-data; boundary={boundary}",
            (),
        )
    # KServe v2 with Triton's binary-data extension: a JSON header, then the BYTES element (length-prefixed)
    element = len(image).to_bytes(4, "little") + image
    header = {
        "inputs": [
            {
                "name": "image",
                "shape": [1, 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(element)},
            }
        ],
        "outputs": [{"name": "index"}, {"name": "score"}],
    }
    head = json.dumps(header).encode()
    return head + element, "application/octet-stream", (("Inference-Header-Content-Length", str(len(head))),)
