"""TorchServe: its Java front end, one Python worker with this file as the handler, batchSize 32 and
maxBatchDelay 1 ms. The handler classifies with convzoo's registry entry, session and preprocessing.

`python -m bench.peers.torchserve_peer --port P --work DIR` (in the peers' virtualenv) archives the handler
and runs `torchserve --foreground` until it is stopped. `--handler stock`: TorchServe's own
`image_classifier` handler instead (bench/peers/torchserve_stock.py), with the model's ONNX file and labels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MODEL = "classifier"
SETTINGS = {  # the model's section of config.properties
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 32,
    "maxBatchDelay": 1,  # ms
    "responseTimeout": 120,
}


class Handler:
    """TorchServe's custom-handler protocol: initialize(context), then handle(requests, context)."""

    def __init__(self) -> None:
        self.classifier: Any = None

    def initialize(self, context: Any) -> None:
        from bench.peers.common import Classifier

        self.classifier = Classifier()

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        images = [bytes(r.get("data") or r.get("body") or b"") for r in data]
        return [json.dumps(a) for a in self.classifier.classify(images)]


_service = Handler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    if _service.classifier is None:
        _service.initialize(context)
    return None if data is None else _service.handle(data, context)


def _config(work: Path, port: int) -> Path:
    models = {MODEL: {"1.0": {"defaultVersion": True, "marName": MODEL, **SETTINGS}}}
    lines = [
        f"inference_address=http://127.0.0.1:{port}",
        f"management_address=http://127.0.0.1:{port + 1}",
        f"metrics_address=http://127.0.0.1:{port + 2}",
        f"model_store={work / 'store'}",
        f"load_models={MODEL}",
        f"models={json.dumps(models)}",
        "default_workers_per_model=1",
        "disable_token_authorization=true",
        "enable_envvars_config=false",
        "install_py_dep_per_model=false",
        "disable_system_metrics=true",
    ]
    path = work / "config.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stock_files(work: Path) -> list[str]:
    """The stock handler's archive: the model's ONNX file and its labels (index_to_name.json)."""
    from service.core.registry import load_registry
    from service.core.settings import Settings

    settings, name = Settings(), os.environ["CONVZOO_PRELOAD"]
    registry = load_registry(settings.registry_path)
    labels = work / "index_to_name.json"
    labels.write_text(json.dumps(dict(enumerate(registry.labels_of(name)))))
    model = settings.models_dir / registry.get(name).artifact.path
    handler = Path(__file__).with_name("torchserve_stock.py")  # imported by TorchServe's worker, not here
    return ["--handler", str(handler), "--serialized-file", str(model), "--extra-files", str(labels)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)  # and the next two: management, metrics
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--handler", choices=["convzoo", "stock"], default="convzoo")
    a = parser.parse_args()
    store = a.work / "store"
    store.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    archiver = [str(bindir / "torch-model-archiver"), "--model-name", MODEL, "--version", "1.0"]
    archiver += _stock_files(a.work) if a.handler == "stock" else ["--handler", __file__]
    archiver += [
        "--export-path",
        str(store),
        "--archive-format",
        "no-archive",
        "--force",
    ]
    subprocess.run(archiver, check=True)
    cmd = [str(bindir / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth"]
    cmd += ["--model-store", str(store), "--ts-config", str(_config(a.work, a.port))]
    os.execv(cmd[0], cmd)  # the bench stops the whole process group


if __name__ == "__main__":
    main()
