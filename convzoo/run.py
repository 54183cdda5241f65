"""A classify run: the files not yet in the journal, sent by a fixed number of workers over one client,
each record written as it comes, with a progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from convzoo.journal import Journal
from convzoo.records import Record
from convzoo.sending import RetryPolicy, Sender


@dataclass(frozen=True)
class Target:
    url: str
    params: dict[str, str]
    concurrency: int
    timeout_s: float
    policy: RetryPolicy


@dataclass
class Tally:
    """What a run has done so far; read after an interruption too."""

    total: int
    skipped: int
    ok: int = 0
    failed: list[Record] = field(default_factory=list)
    retries: int = 0

    @property
    def done(self) -> int:
        return self.ok + len(self.failed)

    def add(self, record: Record) -> None:
        if record.ok:
            self.ok += 1
        else:
            self.failed.append(record)


def pending(paths: list[Path], journal: Journal) -> list[Path]:
    return [p for p in paths if str(p) not in journal.done]


async def classify(
    paths: list[Path], journal: Journal, target: Target, tally: Tally, progress: Progress
) -> None:
    """Classify `paths` (those left to do) into `journal`, counting into `tally`."""
    task = progress.add_task("classify", total=len(paths), ok=0, failed=0)
    limits = httpx.Limits(max_connections=target.concurrency, max_keepalive_connections=target.concurrency)
    async with httpx.AsyncClient(base_url=target.url, limits=limits, timeout=target.timeout_s) as client:
        sender = Sender(client, target.params, target.policy)
        todo = iter(paths)  # shared by the workers: each takes the next file when it is free

        async def worker() -> None:
            for path in todo:
                record = await sender.classify(path)
                journal.write(record)
                tally.add(record)
                tally.retries = sender.retried
                progress.update(task, advance=1, ok=tally.ok, failed=len(tally.failed))

        await asyncio.gather(*(worker() for _ in range(min(target.concurrency, len(paths)))))


def event_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where installed (the service's own dependencies bring it): less CPU per request."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    except ImportError:
        return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=event_loop()) as runner:
        runner.run(main)
