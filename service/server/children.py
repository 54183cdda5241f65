"""Processes the service starts (decoding workers, front processes): they end with it."""

from __future__ import annotations

import contextlib
import ctypes
import os

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int) -> None:
    """In a child: get `sig` when the thread that started it exits (Linux), and exit now if `parent` has
    already gone, so a killed service leaves nothing running behind it."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the service died before the line above
        os._exit(0)
