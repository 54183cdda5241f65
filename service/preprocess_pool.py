"""The threads that decode and preprocess uploads, in two lanes, so that a few expensive uploads cannot
hold every thread while cheap ones wait behind them (docs/security.md, Fairness).

A task's lane is decided by the size of the upload or image it is given: its first bytes argument
(byte length, then the pixel count read from the image header) or PIL image (pixel count). The header
is read on a thread of the small lane, which passes an expensive task on to the large lane; the caller
sees one future either way.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")

LARGE_BYTES = 1 << 20  # an upload over 1 MiB is large whatever its header says


def header_pixels(data: bytes | bytearray | memoryview) -> int:
    """Width x height from an image header (no pixels decoded); 0 for bytes that are no image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return int(image.width) * int(image.height)
    except Exception:  # noqa: BLE001  (not an image: the decoder will say so, cheaply)
        return 0


class PreprocessPool(ThreadPoolExecutor):
    """A thread pool for cheap uploads (itself) with a second one, `large`, for uploads over `large_pixels`."""

    def __init__(self, *, small_threads: int, large_threads: int, large_pixels: int) -> None:
        super().__init__(max_workers=small_threads, thread_name_prefix="preprocess")
        self.large = ThreadPoolExecutor(max_workers=large_threads, thread_name_prefix="preprocess-large")
        self.large_pixels = large_pixels

    def is_large(self, args: tuple[Any, ...]) -> bool:
        for arg in args:
            if isinstance(arg, Image.Image):
                return arg.width * arg.height > self.large_pixels
            if isinstance(arg, bytes | bytearray | memoryview):
                return len(arg) > LARGE_BYTES or header_pixels(arg) > self.large_pixels
        return False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        outer: Future[T] = Future()
        given = (*fn.args, *args) if isinstance(fn, functools.partial) else args

        def triage() -> None:
            if not outer.set_running_or_notify_cancel():
                return
            try:
                if self.is_large(given):
                    self.large.submit(fn, *args, **kwargs).add_done_callback(functools.partial(_copy, outer))
                    return
                outer.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001  (handed to the caller, as ThreadPoolExecutor does)
                outer.set_exception(exc)

        super().submit(triage)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self.large.shutdown(wait=wait, cancel_futures=cancel_futures)


def _copy(outer: Future[T], inner: Future[T]) -> None:
    if inner.cancelled():
        outer.set_exception(CancelledError())
        return
    exc = inner.exception()
    if exc is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(inner.result())
