"""The serving host's description, as the registry records it next to every measured latency."""

from __future__ import annotations

import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from service.compute import cpus
from service.core.registry import Host

CUDA = "CUDAExecutionProvider"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def gpu_model() -> str | None:
    """The first NVIDIA GPU's name, or None without one (or without nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def describe(*, provider: str, intra_op_threads: int) -> Host:
    """This host running `provider`; 0 threads (automatic) is recorded as the count it stands for."""
    threads = intra_op_threads if intra_op_threads > 0 else cpus.default_threads()
    return Host(
        cpu=cpu_model(),
        gpu=gpu_model() if provider == CUDA else None,
        provider=provider,
        intra_op_threads=threads,
    )


def same_machine(a: Host, b: Host) -> bool:
    """Measured on the same kind of machine with the same provider (threads may differ)."""
    return a.cpu == b.cpu and a.gpu == b.gpu and a.provider == b.provider
