"""Intra-op threads from the CPUs the process may use, and how many pools N loaded models make.

The plans are checked on described CPUs; the threads themselves in fresh processes
(`tests.service.threads_probe`) that load real models of the committed zoo through the service's runtime
and count their own threads (/proc/self/task): under a one-CPU affinity, in a one-CPU cgroup where this
machine lets the tests make one, and with a pool per model against the one shared pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.compute import cpus, threads
from tests.paths import REPO
from tests.service.conftest import ClientFactory, Zoo

MODELS = ["fmnist-lenet5", "fmnist-alexnet", "fmnist-resnet-v1"]
# CPUs whose topology no machine has: their physical cores are their number, wherever the test runs
NOWHERE = range(100_000, 100_064)


def _usable(count: float, affinity: int, source: cpus.Source) -> cpus.UsableCpus:
    return cpus.UsableCpus(count, frozenset(NOWHERE[:affinity]), None, source)


def test_one_cpu_is_one_thread_and_no_pool() -> None:
    plan = threads.choose(0, "shared", usable=_usable(1, 1, "affinity"))
    assert (plan.intra_op_threads, plan.pool, plan.spinning) == (1, "none", False)
    assert "1 usable CPU (affinity)" in plan.reason


def test_a_fractional_quota_rounds_down() -> None:
    # 1.5 CPUs of quota: two busy threads would be throttled every period.
    plan = threads.choose(0, usable=cpus.UsableCpus(1.5, frozenset(NOWHERE[:64]), 1.5, "cgroup"))
    assert plan.intra_op_threads == 1 and plan.usable_cpus == 1.5 and plan.cpu_source == "cgroup"


def test_the_quota_not_the_host() -> None:
    plan = threads.choose(0, usable=cpus.UsableCpus(2.0, frozenset(NOWHERE[:64]), 2.0, "cgroup"))
    assert (plan.intra_op_threads, plan.pool, plan.spinning) == (2, "per_model", False)


def test_the_setting_wins_and_the_shared_pool_spins() -> None:
    plan = threads.choose(3, "shared", usable=_usable(64, 64, "host"))
    assert (plan.intra_op_threads, plan.pool, plan.spinning) == (3, "shared", True)
    assert "CONVZOO_INTRA_OP_THREADS" in plan.reason


def probe(zoo: Zoo, *args: str, models: list[str] = MODELS) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.service.threads_probe"]
    cmd += ["--registry", str(zoo.registry_path), "--models-dir", str(zoo.models_dir)]
    cmd += [arg for m in models for arg in ("--model", m)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVZOO_")}
    out = subprocess.run(
        [*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_under_a_one_cpu_affinity_a_session_runs_one_thread(source_zoo: Zoo) -> None:
    cpu = min(os.sched_getaffinity(0))
    result = probe(source_zoo, "--cpu", str(cpu))
    plan = result["plan"]
    assert plan["intra_op_threads"] == 1 and plan["pool"] == "none"
    assert plan["cpu_source"] in ("affinity", "cgroup") and plan["usable_cpus"] <= 1
    # One thread is no pool: three loaded models add no thread to the process.
    assert result["after"] == [result["before"]] * len(MODELS)


def test_n_models_share_one_pool(source_zoo: Zoo) -> None:
    per_model = probe(source_zoo, "--intra-op-threads", "3", "--pool", "per_model")
    shared = probe(source_zoo, "--intra-op-threads", "3", "--pool", "shared")
    grown = [n - per_model["before"] for n in per_model["after"]]
    assert grown == [2, 4, 6]  # a pool of 2 threads (and the caller's) per loaded model
    grown = [n - shared["before"] for n in shared["after"]]
    assert grown == [2, 2, 2]  # one pool of 2 threads for all
    assert shared["plan"]["pool"] == "shared" and shared["plan"]["intra_op_threads"] == 3


def test_once_shared_every_later_session_uses_the_shared_pool(source_zoo: Zoo) -> None:
    # Another app of the same process asking for a pool of its own: ONNX Runtime would refuse that session;
    # it gets the shared pool, as it is, and the plan says so.
    result = probe(source_zoo, "--intra-op-threads", "3", "--pool", "shared", "--later-intra-op-threads", "2")
    later = result["later_plan"]
    assert (later["intra_op_threads"], later["pool"], later["spinning"]) == (3, "shared", True)
    assert "shared pool exists, with 3 threads" in later["reason"]
    assert result["later_after"] == result["after"][-1]  # no new pool


def _cgroup_with_one_cpu() -> Iterator[Path]:
    """A child cgroup limited to one CPU (v2, else v1), where this machine lets the tests make one."""
    root = cpus.CGROUP_ROOT
    name = f"convzoo-test-{uuid.uuid4().hex[:8]}"
    if (root / "cgroup.controllers").is_file():
        directory, files = root / name, {"cpu.max": "100000 100000"}
    else:
        directory, files = root / "cpu" / name, {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
    try:
        directory.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here ({exc.strerror})")
    try:
        for file, value in files.items():
            (directory / file).write_text(value)
    except OSError as exc:
        directory.rmdir()
        pytest.skip(f"cannot limit a cgroup's CPU here ({exc.strerror})")
    try:
        yield directory
    finally:
        directory.rmdir()  # empty again: the probe that joined it has exited


@pytest.fixture
def one_cpu_cgroup() -> Iterator[Path]:
    yield from _cgroup_with_one_cpu()


def test_in_a_one_cpu_cgroup_the_quota_is_read(source_zoo: Zoo, one_cpu_cgroup: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU already: the quota would change nothing")
    result = probe(source_zoo, "--cgroup", str(one_cpu_cgroup), models=MODELS[:1])
    plan = result["plan"]
    assert plan["cpu_source"] == "cgroup" and plan["usable_cpus"] == 1.0
    assert plan["intra_op_threads"] == 1 and plan["pool"] == "none"


@pytest.mark.anyio
async def test_models_says_what_was_chosen_and_why(zoo: Zoo, client_for: ClientFactory) -> None:
    async with client_for(zoo, intra_op_threads=1) as client:
        host = (await client.get("/models")).json()["host"]
    assert host["intra_op_threads"] == 1 and host["thread_pool"] == "none" and host["spinning"] is False
    assert host["usable_cpus"] == cpus.usable().cpus and host["cpu_source"] == cpus.usable().source
    assert host["provider"] == "CPUExecutionProvider" and host["cpu"]
    assert "CONVZOO_INTRA_OP_THREADS" in host["threads_reason"]
