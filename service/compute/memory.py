"""The process's resident memory, and keeping the C heap from holding on to memory that was freed.

ONNX Runtime allocates a run's activations with malloc. glibc serves large blocks from its heap and keeps
freed ones there (its mmap threshold grows up to 32 MB), so a process that ran a big model once stays big.
A fixed threshold of 1 MiB sends every large block to mmap, returned to the system when freed; trimming
after an unload returns what the heap holds free."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("convzoo.memory")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018  (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def _status_bytes(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    return _status_bytes("VmRSS:")


def peak_rss_bytes() -> int:
    """The highest resident set size since the last `reset_peak()` (or since the process started)."""
    return _status_bytes("VmHWM:")


def reset_peak() -> bool:
    """Restart the peak RSS from the current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def bound_heap() -> bool:
    """Large allocations from now on go to mmap and back to the system when freed (glibc only)."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim_heap() -> None:
    """Return the heap's free memory to the system (glibc only)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
