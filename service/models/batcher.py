"""Dynamic batching: one bounded queue per model, cut into batches by size or delay, run on own threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.core.errors import DeadlineExceeded, InferenceFailed, ModelUnavailable, Overloaded, ServiceError

log = logging.getLogger("convzoo.batcher")

RunFn = Callable[[np.ndarray], np.ndarray]


class Admission(Protocol):
    images: int

    def release(self) -> None: ...


# Before a batch runs: how many of its images may run now (the memory budget, service/models/batch_memory.py),
# given the batch's size and its earliest deadline; None when the deadline passed first.
AdmitFn = Callable[[int, float], Admission | None]


@dataclass(frozen=True)
class BatchRecord:
    """One executed batch, passed to every hook (metrics, statistics)."""

    model: str
    size: int
    ok: bool
    compute_ns: int
    queue_ns: tuple[int, ...]  # per item, from enqueue to the start of the batch


@dataclass(frozen=True)
class InferTimings:
    """What a request's images met on their way through a model: its answer's `timings`."""

    queue_ms: float  # the longest wait of the request's images
    inference_ms: float  # the longest batch the request's images ran in
    batch_sizes: tuple[int, ...]
    version: str | None = None  # the model version that answered, where the model has several


@dataclass
class BatcherStats:
    """Running counters of one model's batcher; read them, never write them outside the batcher."""

    batches_by_size: Counter[int] = field(default_factory=Counter)
    compute_ns_by_size: Counter[int] = field(default_factory=Counter)
    items_ok: int = 0
    items_failed: int = 0
    items_expired: int = 0
    items_rejected: int = 0
    queue_ns_total: int = 0
    compute_ns_total: int = 0
    batches_ok: int = 0
    batches_failed: int = 0


@dataclass(frozen=True)
class ItemTiming:
    queue_ns: int
    compute_ns: int
    batch_size: int


Outcome = tuple[np.ndarray, ItemTiming] | ServiceError


@dataclass
class _Item:
    sample: np.ndarray
    deadline: float  # time.monotonic()
    enqueued_ns: int
    future: asyncio.Future[tuple[np.ndarray, ItemTiming]]
    loop: asyncio.AbstractEventLoop
    abandoned: bool = False


def _settle(answers: list[tuple[_Item, Outcome]]) -> None:
    """On the event loop: hand each waiting request its row, or its error."""
    for item, outcome in answers:
        if item.future.done():
            continue
        if isinstance(outcome, ServiceError):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)


def _answer(answers: list[tuple[_Item, Outcome]]) -> None:
    """From any thread: one wake-up of each waiting event loop for all its answers, not one per image."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Item, Outcome]]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, part in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for these answers
            loop.call_soon_threadsafe(_settle, part)


class DynamicBatcher:
    """Per-model queue: `submit` from the event loop; batches run on `threads` dedicated threads.

    A batch is cut when it holds `max_batch_size` items or `max_queue_delay_us` after its first item
    was queued; with `when_idle`, also at once whenever no batch of this model is running, so that a
    lone request never waits for the delay and what arrives during a batch forms the next one. With
    several threads, what is queued is shared between the idle ones. A full queue
    rejects with Overloaded; an item past its deadline is answered with DeadlineExceeded and never run;
    an exception from `run` fails only that batch's items.
    """

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_batch_size: int,
        max_queue_delay_us: int,
        max_queue_size: int,
        threads: int = 1,
        hooks: Sequence[Callable[[BatchRecord], None]] = (),
        when_idle: bool = False,
        admit: AdmitFn | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_us < 0 or threads < 1:
            raise ValueError("batcher sizes must be positive")
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_size = max_queue_size
        self.when_idle = when_idle
        self.stats = BatcherStats()
        self.hooks = tuple(hooks)  # called on the inference thread after every batch
        self._admit = admit
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # batches executing now
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"infer-{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    # ---- event-loop side -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and self._busy == 0

    async def submit(self, batch: np.ndarray, *, deadline: float) -> tuple[np.ndarray, list[ItemTiming]]:
        """Queue the N samples of `batch` (N x sample) and wait for their N output rows, in order."""
        loop = asyncio.get_running_loop()
        now_ns = time.perf_counter_ns()
        items = [_Item(sample, deadline, now_ns, loop.create_future(), loop) for sample in batch]
        self._enqueue(items)
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                if len(items) == 1:  # the common case, without a gather's task per image
                    results = [await items[0].future]
                else:
                    results = await asyncio.gather(*(item.future for item in items))
        except (TimeoutError, DeadlineExceeded):
            for item in items:
                item.abandoned = True  # the worker drops it instead of running it late
            with self._cond:
                self.stats.items_expired += len(items)
            raise DeadlineExceeded("The request's deadline passed before inference completed.") from None
        except BaseException:
            for item in items:
                item.abandoned = True
            raise
        rows = results[0][0][None] if len(results) == 1 else np.stack([r[0] for r in results])
        return rows, [r[1] for r in results]

    def _enqueue(self, items: list[_Item]) -> None:
        with self._cond:
            if self._stopping:
                raise ModelUnavailable(f"Model {self.name} is being unloaded; retry.", retry_after_s=1)
            if len(self._queue) + len(items) > self.max_queue_size:
                self.stats.items_rejected += len(items)
                raise Overloaded(
                    f"The queue of model {self.name} is full ({self.max_queue_size} images); retry shortly.",
                    retry_after_s=self._retry_after_s(),
                )
            self._queue.extend(items)
            self._cond.notify_all()

    def _retry_after_s(self) -> float:
        # Time to drain the queue at the measured per-image compute, at least one second.
        done = self.stats.items_ok + self.stats.items_failed
        per_item_s = self.stats.compute_ns_total / done / 1e9 if done else 0.0
        return max(1.0, per_item_s * len(self._queue))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers after the batches already cut; queued items get ModelUnavailable."""
        with self._cond:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        _answer(
            [
                (item, ModelUnavailable(f"Model {self.name} was unloaded; retry.", retry_after_s=1))
                for item in pending
            ]
        )
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    # ---- worker side -----------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            answers: list[tuple[_Item, Outcome]] = []
            admission = None
            try:
                batch, admission = self._admitted(batch)
                answers = self._execute(batch) if batch else []
            finally:
                if admission is not None:
                    admission.release()
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
            # Answered once the batch no longer counts as running: a client that has its answer finds
            # the model idle (evictable, and cut at once with `when_idle`).
            _answer(answers)

    def _next_batch(self) -> list[_Item] | None:
        """Block until a batch is cut: full, or the delay since its first item has passed."""
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                self._drop_dead()
                if not self._queue:
                    continue
                first = self._queue[0].enqueued_ns
                cut_at = first / 1e9 + self.max_queue_delay_s
                wait = cut_at - time.perf_counter_ns() / 1e9
                idle = self.when_idle and self._busy == 0  # no batch running: waiting gains nothing
                if len(self._queue) >= self.max_batch_size or wait <= 0 or idle:
                    n = self._share(len(self._queue))
                    batch = [self._queue.popleft() for _ in range(n)]
                    self._busy += 1
                    if self._queue:
                        self._cond.notify_all()  # another worker may cut the next batch
                    return batch
                self._cond.wait(wait)

    def _admitted(self, batch: list[_Item]) -> tuple[list[_Item], Admission | None]:
        """The part of the batch the memory budget lets run now; the rest goes back to the head of the
        queue (all of it when the earliest deadline passed first: the queue then answers it expired)."""
        if self._admit is None:
            return batch, None
        admission = self._admit(len(batch), min(item.deadline for item in batch))
        images = 0 if admission is None else admission.images
        if images < len(batch):
            rest = batch[images:]
            with self._cond:
                if not self._stopping:
                    self._queue.extendleft(reversed(rest))
                    self._cond.notify_all()
                    rest = []
            unloaded = ModelUnavailable(f"Model {self.name} was unloaded; retry.", retry_after_s=1)
            _answer([(item, unloaded) for item in rest])
        return batch[:images], admission

    def _share(self, queued: int) -> int:
        """This worker's part of the queue, split evenly between the idle workers (lock held).

        With several inference threads a burst then runs as parallel batches, one per thread, instead of
        one batch while the other threads idle: on a CPU, two single-stream runs use the cores better
        than one run's intra-op parallelism (docs/worker-model.md)."""
        idle = max(1, len(self._threads) - self._busy)
        return min(self.max_batch_size, -(-queued // idle))

    def _drop_dead(self) -> None:
        """Answer expired or abandoned items now, so they never run late (lock held)."""
        now = time.monotonic()
        if all(not item.abandoned and item.deadline > now for item in self._queue):
            return
        keep: deque[_Item] = deque()
        expired: list[tuple[_Item, Outcome]] = []
        for item in self._queue:
            if item.abandoned:
                continue
            if item.deadline <= now:
                expired.append((item, DeadlineExceeded("The request's deadline passed while it was queued.")))
                continue
            keep.append(item)
        self._queue = keep
        _answer(expired)

    def _execute(self, batch: list[_Item]) -> list[tuple[_Item, Outcome]]:
        """Run the batch's live items; their answers, and those of the expired ones, to be handed out."""
        start_ns = time.perf_counter_ns()
        now = time.monotonic()
        live: list[_Item] = []
        expired: list[tuple[_Item, Outcome]] = []
        for item in batch:
            if item.abandoned:
                continue
            if item.deadline <= now:
                expired.append((item, DeadlineExceeded("The request's deadline passed while it was queued.")))
                continue
            live.append(item)
        if not live:
            return expired
        queue_ns = tuple(start_ns - item.enqueued_ns for item in live)
        try:
            out = self._run(np.stack([item.sample for item in live]))
            if len(out) != len(live):
                raise RuntimeError(f"{len(out)} outputs for {len(live)} inputs")
        except Exception:
            compute_ns = time.perf_counter_ns() - start_ns
            log.exception("inference failed in model %s for a batch of %d", self.name, len(live))
            self._record(len(live), False, compute_ns, queue_ns)
            failed = InferenceFailed(f"Inference failed in model {self.name}.")
            return [*expired, *((item, failed) for item in live)]
        compute_ns = time.perf_counter_ns() - start_ns
        self._record(len(live), True, compute_ns, queue_ns)
        return [
            *expired,
            *(
                (item, (row, ItemTiming(queue_ns=q, compute_ns=compute_ns, batch_size=len(live))))
                for item, row, q in zip(live, out, queue_ns, strict=True)
            ),
        ]

    def _record(self, size: int, ok: bool, compute_ns: int, queue_ns: tuple[int, ...]) -> None:
        with self._cond:
            s = self.stats
            s.batches_by_size[size] += 1
            s.compute_ns_by_size[size] += compute_ns
            s.compute_ns_total += compute_ns
            s.queue_ns_total += sum(queue_ns)
            if ok:
                s.batches_ok += 1
                s.items_ok += size
            else:
                s.batches_failed += 1
                s.items_failed += size
        record = BatchRecord(model=self.name, size=size, ok=ok, compute_ns=compute_ns, queue_ns=queue_ns)
        for hook in self.hooks:
            try:
                hook(record)
            except Exception:
                log.exception("batch hook failed")
