"""The CPUs this process may really use: its affinity, and its cgroup's CPU quota (a container's limit).

`os.cpu_count()` is the host's count: in a pod limited to 2 CPUs on a 64-core node it says 64. The kernel
enforces two narrower limits, read here: the affinity mask (`taskset`, a cpuset) and the CFS quota of the
process's cgroup (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the tightest of the
process's own cgroup and its ancestors. Used by the front processes (how many) and by the ONNX Runtime
sessions (how many intra-op threads). No ONNX Runtime here: the fronts import this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
SYS_CPUS = Path("/sys/devices/system/cpu")
# cgroup v1 mounts the cpu controller alone or together with cpuacct, under either name
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")

Source = Literal["cgroup", "affinity", "host"]


@dataclass(frozen=True)
class UsableCpus:
    cpus: float  # what the process may use; fractional under a quota of, say, 1.5 CPUs
    affinity: frozenset[int]  # the CPUs it may run on
    quota: float | None  # the cgroup's CPU limit in CPUs; None without one
    source: Source  # which limit `cpus` comes from ("host": neither limits it)

    @property
    def whole(self) -> int:
        """Whole CPUs, at least one: 1.5 CPUs of quota are 1, as two busy threads would be throttled."""
        return max(1, int(self.cpus))


def affinity() -> frozenset[int]:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return frozenset(range(os.cpu_count() or 1))


def _v2_limit(directory: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
    return None


def _v1_limit(directory: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:  # -1: no limit
            return quota / period
    return None


def _own_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy and in the v1 cpu controller's, from /proc/self/cgroup."""
    v2 = v1 = None
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
            if hierarchy == "0" and controllers == "":
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    return v2, v1


def _tightest(mount: Path, own: str | None, read: Callable[[Path], float | None]) -> float | None:
    """The smallest limit on the way from the process's own cgroup up to the mount's root. In a container
    with its own cgroup namespace the path is `/` (the root is its cgroup); without one the path may not
    exist under the mount, and the root's limit is the one left to read."""
    limits: list[float] = []
    path = PurePosixPath(own or "/")
    for part in (path, *path.parents):
        directory = mount / str(part).lstrip("/")
        limit = read(directory)
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota in CPUs that the process's cgroups impose (v2, else v1), or None without one."""
    v2_path, v1_path = _own_paths(proc_cgroup)
    if (root / "cgroup.controllers").is_file():  # the unified (v2) hierarchy mounted at the root
        return _tightest(root, v2_path, _v2_limit)
    for name in V1_CPU_DIRS:
        if (root / name).is_dir():
            return _tightest(root / name, v1_path, _v1_limit)
    return None


def usable(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> UsableCpus:
    """The CPUs this process may use: the fewer of its affinity and its cgroup's quota."""
    allowed = affinity()
    quota = cgroup_quota(root, proc_cgroup)
    host = os.cpu_count() or len(allowed)
    if quota is not None and quota < len(allowed):
        return UsableCpus(quota, allowed, quota, "cgroup")
    return UsableCpus(float(len(allowed)), allowed, quota, "affinity" if len(allowed) < host else "host")


def cores() -> float:
    """The CPUs this process may use (see `usable`)."""
    return usable().cpus


def front_processes() -> int:
    """The front processes when `CONVZOO_FRONT_PROCESSES` is unset: one per usable CPU, at most 4; none
    below two, where the service process alone does everything."""
    available = cores()
    return 0 if available < 2 else min(int(available), 4)


def physical_cores(cpus: frozenset[int], sys_cpus: Path = SYS_CPUS) -> int:
    """How many physical cores `cpus` span: SMT siblings (hyper-threads) of one core count once, as
    ONNX Runtime's own default counts them. Their number where the topology cannot be read."""
    cores_seen: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = sys_cpus / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores_seen.add((package, core))
    return len(cores_seen) or len(cpus)


def default_threads(usable_cpus: UsableCpus | None = None) -> int:
    """The intra-op threads of `CONVZOO_INTRA_OP_THREADS=0`: the physical cores among the usable CPUs."""
    u = usable_cpus or usable()
    return min(u.whole, physical_cores(u.affinity))
