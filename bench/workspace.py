"""The bench's own registry and model directory under .cache/bench: the committed registry is never touched.

fmnist-lenet5 is copied from the committed zoo; resnet50 is exported here with random weights (speed does
not depend on the weights) the first time and reused while its checksum matches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from service.core.registry import load_registry, save_registry, sha256_file

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "bench"
SMALL, LARGE = "fmnist-lenet5", "resnet50"


def _built(registry_path: Path, models_dir: Path, name: str) -> bool:
    if not registry_path.is_file():
        return False
    try:
        entry = load_registry(registry_path).get(name)
    except ValueError:
        return False
    path = models_dir / entry.artifact.path
    return entry.built and path.is_file() and sha256_file(path) == entry.artifact.sha256


def prepare(work: Path = WORK, *, fp16: bool = False) -> Path:
    """Make `work`/registry.yaml and `work`/models with both models built; returns the registry path.

    `fp16` also builds the export's float16 variant, resnet50-fp16 (its entry stays in `work`/built.yaml).
    """
    models_dir = work / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    built = work / "built.yaml"  # the export's own registry copy, holding the resnet50 entries
    names = [LARGE, f"{LARGE}-fp16"] if fp16 else [LARGE]
    if not all(_built(built, models_dir, n) for n in names):
        shutil.copyfile(ROOT / "registry.yaml", built)
        print("bench: exporting resnet50 with random weights (once) ...", flush=True)
        flags = ["--random-weights", *(["--fp16"] if fp16 else [])]
        cmd = [sys.executable, "-m", "export", "build", "--zoo", "imagenet", "--models", LARGE, *flags]
        cmd += ["--out", str(models_dir), "--registry", str(built)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    source = load_registry(ROOT / "registry.yaml")
    small = source.get(SMALL)
    shutil.copyfile(ROOT / "models" / small.artifact.path, models_dir / small.artifact.path)
    large = load_registry(built).get(LARGE)
    registry = load_registry(built).model_copy(update={"models": [small, large], "default": SMALL})
    save_registry(registry, work / "registry.yaml")
    return work / "registry.yaml"


def registry_for(default: str, work: Path = WORK) -> Path:
    """A copy of the bench registry whose default (the model readiness waits for) is `default`."""
    path = work / f"registry-{default}.yaml"
    registry = load_registry(work / "registry.yaml")
    save_registry(registry.model_copy(update={"default": default}), path)
    return path


def artifact(name: str, work: Path = WORK) -> Path:
    return work / "models" / load_registry(work / "registry.yaml").get(name).artifact.path
