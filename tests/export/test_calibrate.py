"""`python -m export calibrate` on a copy of the committed zoo: real ONNX Runtime timings, host fields."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.calibrate import calibrate
from service.compute import host
from service.core.registry import Registry, load_registry, save_registry
from tests.paths import REPO


@pytest.fixture
def small_zoo(tmp_path: Path, committed_registry: Registry, models_dir: Path) -> tuple[Path, Path, list[str]]:
    """registry.yaml and models/ in tmp_path with the default and the two smallest other models."""
    default = committed_registry.get(committed_registry.default)
    others = sorted(
        (
            m
            for m in committed_registry.models
            if m.name != default.name and m.built and m.quantization is None
        ),
        key=lambda m: m.artifact.bytes or 0,
    )[:2]
    keep = [default, *others]
    (tmp_path / "models").mkdir()
    for m in keep:
        (tmp_path / "models" / m.artifact.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(models_dir / m.artifact.path, tmp_path / "models" / m.artifact.path)
    registry = committed_registry.model_copy(update={"models": keep})
    save_registry(registry, tmp_path / "registry.yaml")
    return tmp_path / "registry.yaml", tmp_path / "models", [m.name for m in keep]


def test_writes_plausible_figures_with_the_host(small_zoo: tuple[Path, Path, list[str]]) -> None:
    registry_path, models, names = small_zoo
    broken = names[2]
    before = load_registry(registry_path)
    with (models / before.get(broken).artifact.path).open("ab") as f:
        f.write(b"\0")
    outcomes = calibrate(registry_path=registry_path, models_dir=models, seconds=0.1, threads=1, batch_size=8)
    assert [o.name for o in outcomes] == names
    skipped = {o.name: o.reason for o in outcomes if o.latency is None}
    assert skipped == {broken: "the artifact's sha256 does not match the registry"}
    after = load_registry(registry_path)
    assert after.get(broken).latency == before.get(broken).latency  # kept, not invented
    for name in names[:2]:
        lat = after.get(name).latency
        assert lat is not None
        assert 0 < lat.p50_ms <= lat.p99_ms < 10_000
        assert lat.throughput_ips > 0 and lat.batch_size == 8
        assert lat.host.cpu == host.cpu_model() and lat.host.cpu
        assert lat.host.provider == "CPUExecutionProvider" and lat.host.gpu is None
        assert lat.host.intra_op_threads == 1
        assert lat.date == dt.datetime.now(dt.UTC).date()
        # everything but the latency is as it was
        assert after.get(name).model_copy(update={"latency": None}) == before.get(name).model_copy(
            update={"latency": None}
        )


def test_unknown_model_and_bad_values_fail(small_zoo: tuple[Path, Path, list[str]]) -> None:
    registry_path, models, _ = small_zoo
    with pytest.raises(ValueError, match="Unknown model nope"):
        calibrate(registry_path=registry_path, models_dir=models, names=["nope"])
    with pytest.raises(ValueError):
        calibrate(registry_path=registry_path, models_dir=models, seconds=0)


def test_cli_runs_without_torch(small_zoo: tuple[Path, Path, list[str]]) -> None:
    registry_path, models, names = small_zoo
    # `torch` set to None in sys.modules: any import of it fails, so the command must not need it.
    code = "import sys; sys.modules['torch'] = None; import runpy; runpy.run_module('export', run_name='__main__')"
    args = [
        "calibrate",
        "--registry",
        str(registry_path),
        "--out",
        str(models),
        "--models",
        names[1],
        "--seconds",
        "0.05",
        "--threads",
        "2",
        "--batch-size",
        "4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert names[1] in run.stdout and "CPUExecutionProvider, 2 thread(s)" in run.stdout
    lat = load_registry(registry_path).get(names[1]).latency
    assert lat is not None and lat.host.intra_op_threads == 2 and lat.batch_size == 4
    bad = subprocess.run(
        [sys.executable, "-c", code, *args[:5], "--models", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "Unknown model nope" in bad.stderr
