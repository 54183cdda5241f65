"""The CPUs the process may use: cgroup v2 and v1 quotas read from directories the tests write (laid out as
the kernel lays them out), the affinity, and the physical cores of a written sysfs topology."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.compute import cpus


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(root: Path, limits: dict[str, str], own: str) -> Path:
    """A unified hierarchy at `root` with `cpu.max` per cgroup path, and a /proc/self/cgroup naming `own`."""
    _write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    for path, limit in limits.items():
        _write(root / path.lstrip("/") / "cpu.max", f"{limit}\n")
    proc = root.parent / "proc-self-cgroup"
    _write(proc, f"0::{own}\n")
    return proc


def _v1(root: Path, mount: str, limits: dict[str, tuple[int, int]], own: str) -> Path:
    """A v1 cpu controller mounted at `root/mount`, quota and period per cgroup path."""
    for path, (quota, period) in limits.items():
        directory = root / mount / path.lstrip("/")
        _write(directory / "cpu.cfs_quota_us", f"{quota}\n")
        _write(directory / "cpu.cfs_period_us", f"{period}\n")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    proc = root.parent / "proc-self-cgroup"
    _write(proc, f"12:memory:{own}\n4:{mount}:{own}\n1:name=systemd:{own}\n")
    return proc


def test_v2_quota_of_the_process_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/": "max 100000", "/kubepods/pod1/c1": "200000 100000"}, "/kubepods/pod1/c1")
    assert cpus.cgroup_quota(root, proc) == 2.0


def test_v2_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    # A pod's limit on its parent, none on the container's own cgroup: the parent's holds.
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/pod": "150000 100000", "/pod/c1": "max 100000"}, "/pod/c1")
    assert cpus.cgroup_quota(root, proc) == 1.5


def test_v2_namespaced_container_reads_its_root(tmp_path: Path) -> None:
    # With its own cgroup namespace a container sees its cgroup as "/" and mounted at the root.
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/": "50000 100000"}, "/")
    assert cpus.cgroup_quota(root, proc) == 0.5


def test_v2_path_missing_under_the_mount_falls_back_to_the_root(tmp_path: Path) -> None:
    # Without a namespace /proc/self/cgroup names the host's path, which the container's mount lacks.
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/": "300000 100000"}, "/system.slice/docker-abc.scope")
    assert cpus.cgroup_quota(root, proc) == 3.0


def test_v2_without_a_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/": "max 100000", "/a": "max 100000"}, "/a")
    assert cpus.cgroup_quota(root, proc) is None


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_v1_quota_and_period(tmp_path: Path, mount: str) -> None:
    root = tmp_path / "cgroup"
    limits = {"/": (-1, 100000), "/docker/abc": (50000, 100000)}
    proc = _v1(root, mount, limits, "/docker/abc")
    assert cpus.cgroup_quota(root, proc) == 0.5


def test_v1_unlimited(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _v1(root, "cpu", {"/": (-1, 100000)}, "/")
    assert cpus.cgroup_quota(root, proc) is None


def test_no_cgroup_filesystem(tmp_path: Path) -> None:
    assert cpus.cgroup_quota(tmp_path / "none", tmp_path / "none-either") is None


def test_usable_takes_the_quota_below_the_affinity(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/": "50000 100000"}, "/")
    usable = cpus.usable(root, proc)
    assert usable.source == "cgroup" and usable.cpus == 0.5 and usable.whole == 1
    assert usable.affinity == frozenset(os.sched_getaffinity(0))


def test_usable_without_a_quota_is_the_affinity(tmp_path: Path) -> None:
    usable = cpus.usable(tmp_path / "none", tmp_path / "none-either")
    allowed = os.sched_getaffinity(0)
    assert usable.cpus == len(allowed) and usable.quota is None
    assert usable.source == ("host" if len(allowed) == os.cpu_count() else "affinity")


def test_a_quota_above_the_affinity_does_not_raise_it(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _v2(root, {"/": f"{(os.cpu_count() or 1) * 2 * 100000} 100000"}, "/")
    usable = cpus.usable(root, proc)
    assert usable.cpus == len(os.sched_getaffinity(0)) and usable.source != "cgroup"


def test_physical_cores_count_smt_siblings_once(tmp_path: Path) -> None:
    # Two cores with two hyper-threads each: CPUs 0 and 2 on core 0, 1 and 3 on core 1.
    for cpu, core in ((0, 0), (1, 1), (2, 0), (3, 1)):
        _write(tmp_path / f"cpu{cpu}" / "topology" / "core_id", f"{core}\n")
        _write(tmp_path / f"cpu{cpu}" / "topology" / "physical_package_id", "0\n")
    assert cpus.physical_cores(frozenset({0, 1, 2, 3}), tmp_path) == 2
    assert cpus.physical_cores(frozenset({0, 2}), tmp_path) == 1
    assert cpus.physical_cores(frozenset({0, 1}), tmp_path) == 2
    assert cpus.physical_cores(frozenset({0, 9}), tmp_path) == 2  # unreadable: every CPU counts
