"""Where uploads are decoded and preprocessed: on the event loop when tiny, else in three lanes, so that a few expensive uploads can hold
neither every thread nor the interpreter while cheap ones wait behind them (docs/security.md, Fairness).

- tiny images (`inline`: at most INLINE_BYTES and INLINE_PIXELS, from the header): the caller prepares them
  where it is, on the event loop, because a thread hand-off costs more than their decoding;
- small uploads: threads of this pool (no copies);
- large images (over `large_pixels` from the header, or over 1 MiB): worker processes, each with an
  address-space limit, so that their decoding neither holds the GIL that the event loop and the small
  lane need, nor takes more memory than the limit (it fails with MemoryError there: a 413);
- other large work (a /v2 JSON body over 1 MiB): threads of their own.

A task's lane is decided by its first bytes argument (byte length, then the pixel count read from the
image header) or PIL image argument (pixel count; a large decoded image goes to the large threads),
`functools.partial` arguments included. The header is
read on a thread of the small lane, which hands a large task on; the caller sees one future either way.
"""

from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import os
import resource
import signal
import struct
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, TypeVar

from PIL import Image

from service.core.errors import BadImage
from service.images.image_gate import gate
from service.images.preprocess import ROW_COST
from service.server.children import die_with_parent
from service.telemetry.logging import configure_logging

T = TypeVar("T")
Lane = Literal["small", "large", "process"]
log = logging.getLogger("convzoo.preprocess")

LARGE_BYTES = 1 << 20  # an upload over 1 MiB is large whatever its header says
# A 28x28 PNG decodes and preprocesses in about 0.1 ms, a 128x128 one in about 0.3 ms; a hop to a thread
# and back costs about as much as the first, and holds the GIL-bound loop no less.
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 128 * 128


def header_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Width and height from an image header (no pixels decoded); (0, 0) for bytes that are no image or
    that the gate refuses (the decoder will say so, cheaply)."""
    head = bytes(data[:24])
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":  # the common case, in a microsecond
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    try:
        raw = bytes(data) if not isinstance(data, bytes) else data
        fmt = gate(raw)  # only the format's own plugin reads the header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(raw), formats=[fmt]) as image:
                return int(image.width), int(image.height)
    except Exception:  # noqa: BLE001  (not an image, or refused: the decoder will say so, cheaply)
        return 0, 0


def inline(data: bytes | bytearray | memoryview) -> bool:
    """An upload cheap enough to prepare on the event loop: its size, and its pixels by its header."""
    if len(data) > INLINE_BYTES:
        return False
    width, height = header_size(data)
    return 0 < width * height <= INLINE_PIXELS and height <= INLINE_PIXELS // 8


def _start_worker(parent: int, max_bytes: int | None, log_level: str) -> None:
    """In each worker process: die with the service (a killed service leaves no orphan decoding on), log
    as the service does (JSON lines, warnings included), and map at most `max_bytes`."""
    die_with_parent(parent, signal.SIGKILL)
    configure_logging(log_level)
    if max_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


class PreprocessPool(ThreadPoolExecutor):
    """Threads for small uploads (this pool), worker processes for large images, threads for other large
    work. The processes start on the first large image."""

    def __init__(
        self,
        *,
        small_threads: int,
        large_threads: int,
        large_pixels: int,
        process_memory_mb: float | None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(max_workers=small_threads, thread_name_prefix="preprocess")
        self.large = ThreadPoolExecutor(max_workers=large_threads, thread_name_prefix="preprocess-large")
        self.large_pixels = large_pixels
        self.max_pixels = max_pixels  # over it, the decoder refuses from the header: no need for a process
        self._workers = large_threads
        self._memory = int(process_memory_mb * 1_000_000) if process_memory_mb else None
        self._lock = threading.Lock()
        self._processes = self._new_processes()

    def _new_processes(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a process with runtime threads
            initializer=_start_worker,
            initargs=(os.getpid(), self._memory, logging.getLevelName(logging.getLogger().level)),
        )

    def lane(self, args: tuple[Any, ...]) -> Lane:
        for arg in args:
            if isinstance(arg, Image.Image):  # decoded already: shipping it to a process would copy it twice
                return "large" if arg.width * arg.height > self.large_pixels else "small"
            if isinstance(arg, bytes | bytearray | memoryview):
                width, height = header_size(arg)
                pixels = width * height
                if self.max_pixels is not None and pixels + ROW_COST * height > self.max_pixels:
                    return "small"
                if pixels > self.large_pixels or (pixels and len(arg) > LARGE_BYTES):
                    return "process"
                return "large" if len(arg) > LARGE_BYTES else "small"
        return "small"

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        outer: Future[T] = Future()
        given = (*fn.args, *args) if isinstance(fn, functools.partial) else args

        def triage() -> None:
            if not outer.set_running_or_notify_cancel():
                return
            try:
                lane = self.lane(given)
                if lane == "small":
                    outer.set_result(fn(*args, **kwargs))
                    return
                inner = (
                    self._in_process(fn, args, kwargs)
                    if lane == "process"
                    else self.large.submit(fn, *args, **kwargs)
                )
                inner.add_done_callback(functools.partial(self._settle, outer))
            except BaseException as exc:  # noqa: BLE001  (handed to the caller, as ThreadPoolExecutor does)
                outer.set_exception(exc)

        super().submit(triage)
        return outer

    def _in_process(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[T]:
        with self._lock:
            processes = self._processes
        try:
            return processes.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._renew(processes)
            with self._lock:
                return self._processes.submit(fn, *args, **kwargs)

    def _renew(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._processes is broken:
                log.warning("a preprocessing worker process died; starting new ones")
                self._processes = self._new_processes()
        broken.shutdown(wait=False, cancel_futures=True)

    def _settle(self, outer: Future[T], inner: Future[T]) -> None:
        if inner.cancelled():
            outer.set_exception(CancelledError())
            return
        exc = inner.exception()
        if isinstance(exc, BrokenProcessPool):
            # A worker died (a crash in a codec, or killed): this upload is refused, the pool replaced.
            with self._lock:
                processes = self._processes
            self._renew(processes)
            outer.set_exception(BadImage("The image could not be decoded: its decoder failed."))
        elif exc is not None:
            outer.set_exception(exc)
        else:
            outer.set_result(inner.result())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self.large.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._processes.shutdown(wait=True, cancel_futures=cancel_futures)
