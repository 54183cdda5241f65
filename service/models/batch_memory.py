"""The activations of the batches running now, held against the memory budget: a model's batcher asks before
it runs a batch and gives the bytes back after it. A batch that would overrun the budget is cut smaller or
waits for a running batch to end, within its deadline (the policy: `budget.admit_batch`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from service.compute.memory import rss_bytes
from service.models.budget import Activations, RunBatch, admit_batch

log = logging.getLogger("convzoo.manager")

RECHECK_S = 0.05  # a waiting batch looks again this often: the RSS falls without telling anyone
DRAIN_S = 2.0  # a load waits at most this long for running batches and loads (resnet34 loaded in 1.2 s)
Event = str  # "cut": fewer images than asked; "wait": waited for room; "alone": ran over the budget alone


@dataclass
class Grant:
    """Leave to run `images` images, holding `bytes` of the budget until `release`."""

    images: int
    bytes: int
    _memory: BatchMemory | None = None

    def release(self) -> None:
        if self._memory is not None:
            self._memory.release(self)
            self._memory = None


class BatchMemory:
    """Thread-safe: batcher threads `admit` and `release`; the manager, on the event loop, keeps `others`
    (the bytes its models and calibration sessions count) current and calls `changed` after evictions.
    `short` is told, from a batcher thread, the bytes of one image of a batch that lacks room: the manager
    then evicts idle models until they fit beside what it counts.
    Disabled (CONVZOO_BATCH_MEMORY=false), every batch runs whole and nothing is counted."""

    def __init__(self, budget: int, *, enabled: bool = True) -> None:
        self.budget = budget
        self.enabled = enabled
        self.baseline = 0  # the process's RSS before any model (0: not known, the RSS is not read)
        self.others: Callable[[], int] = lambda: 0
        self.short: Callable[[int], None] = lambda need: None
        self.events: Counter[tuple[str, Event]] = Counter()  # (model, event)
        self._cond = threading.Condition()
        self._reserved = 0
        self._running = 0
        self._alone_logged: set[str] = set()
        self._closed = False

    @property
    def reserved_bytes(self) -> int:
        """The activations of the batches running now, as the budget counts them."""
        return self._reserved

    def room(self) -> int:
        """What the budget leaves for one more batch (lock held): beside the running batches and the models,
        these at what the manager counts or, when more, at the process's RSS above its baseline less the
        running batches' part (memory no figure has: a load measured low, buffers, the heap)."""
        models = self.others()
        if self.baseline > 0:
            models = max(models, rss_bytes() - self.baseline - self._reserved)
        return self.budget - models - self._reserved

    def admit(
        self, model: str, activations: Activations, wanted: int, deadline: float, *, urgent: bool = True
    ) -> Grant | None:
        """Leave to run `wanted` images of `model`, or fewer; blocks while not one fits beside the running
        batches. None when `deadline` (time.monotonic()) passes first, or the service stops; and, when not
        `urgent` (calibration), rather than run one image alone over the budget."""
        if not self.enabled:
            return Grant(wanted, 0)
        with self._cond:
            waited = False
            while True:
                room = self.room()
                decision = admit_batch(room, activations, wanted, self._running)
                # Alone over the budget only once idle models had the chance to be evicted for it.
                alone = isinstance(decision, RunBatch) and decision.alone
                if isinstance(decision, RunBatch) and (not alone or (urgent and waited)):
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                if not waited:
                    self.events[(model, "wait")] += 1
                    self.short(activations.bytes_for(1))
                    waited = True
                self._cond.wait(min(left, RECHECK_S))
            need = activations.bytes_for(decision.images)
            self._reserved += need
            self._running += 1
            self._count(model, decision, wanted, need, room)
        return Grant(decision.images, need, self)

    def _count(self, model: str, decision: RunBatch, wanted: int, need: int, room: int) -> None:
        """The counters and the log line of one admission (lock held)."""
        if decision.images < wanted:
            self.events[(model, "cut")] += 1
        if not decision.alone:
            return
        self.events[(model, "alone")] += 1
        level = logging.DEBUG if model in self._alone_logged else logging.WARNING
        self._alone_logged.add(model)
        log.log(
            level,
            "one image of model %s needs %.1f MB of activations beyond the memory budget, and no idle model "
            "was left to evict: it runs alone",
            model,
            (need - room) / 1e6,
        )

    def release(self, grant: Grant) -> None:
        with self._cond:
            self._reserved -= grant.bytes
            self._running -= 1
            self._cond.notify_all()

    def changed(self) -> None:
        """The models' memory went down (an eviction): waiting batches look again."""
        with self._cond:
            self._cond.notify_all()

    def drain(self, timeout_s: float = DRAIN_S, *, loading: Callable[[], bool] = lambda: False) -> None:
        """Before a load, whose peak the models now count: while that leaves no room, wait for the running
        batches (a batch lasts milliseconds, and no new one is admitted beyond it) and for the other loads
        (`loading`: their peaks pass) to end, at most `timeout_s`; then the load goes ahead."""
        if not self.enabled:
            return
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._running or loading()) and self.room() < 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, RECHECK_S))

    def close(self) -> None:
        """The service is stopping: batches waiting for room give up (their requests are answered)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
