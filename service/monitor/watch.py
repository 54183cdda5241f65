"""The monitor as the process that answers a request sees it: it scores each answer against the model
version's reference (`unusual` and `ood_score` in the answer), sends the answered images' `Seen` rows to
the one live monitor (service/monitor/live.py: in process, or over the link from a front), and samples
payloads. `LocalWatch` is the service's own; `LinkedWatch` a front's."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from service.core.registry import ModelEntry
from service.core.settings import Settings
from service.monitor import signals
from service.monitor.live import Monitor
from service.monitor.reference import References
from service.monitor.sampling import Sampler

log = logging.getLogger("convzoo.monitor")


def references_of(settings: Settings) -> References:
    return References(
        settings.models_dir, settings.captured_references_dir or settings.models_dir / "references"
    )


def sampler_of(settings: Settings) -> Sampler | None:
    if settings.sample_dir is None or settings.sample_share <= 0:
        return None
    return Sampler(
        settings.sample_dir,
        share=settings.sample_share,
        images=settings.sample_images,
        file_bytes=int(settings.sample_file_mb * 1_000_000),
        max_bytes=int(settings.sample_max_mb * 1_000_000),
    )


class Watch:
    """What an answer needs of the monitor. `observe` sends rows to the live monitor; `report` and
    `capture` ask it."""

    def __init__(self, settings: Settings, references: References, sampler: Sampler | None) -> None:
        self.enabled = settings.monitor
        self.references = references
        self.sampler = sampler

    def answered(
        self,
        entry: ModelEntry,
        logits: np.ndarray,
        probs: np.ndarray,
        batch: np.ndarray,
        uploads: Sequence[signals.Upload],
    ) -> list[dict[str, Any]]:
        """Each image's monitor fields for the answer ({} without a reference); records the rows. A
        failure here is logged and costs the answer its monitor fields, never the answer."""
        if not self.enabled:
            return [{} for _ in uploads]
        try:
            return self._answered(entry, logits, probs, batch, uploads)
        except Exception:
            log.exception("monitoring an answer of %s failed; answered without it", entry.name)
            return [{} for _ in uploads]

    def _answered(
        self,
        entry: ModelEntry,
        logits: np.ndarray,
        probs: np.ndarray,
        batch: np.ndarray,
        uploads: Sequence[signals.Upload],
    ) -> list[dict[str, Any]]:
        ref = self.references.get(entry)
        rows, fields = [], []
        answers = signals.of_answers(logits, probs, batch, entry.preprocessing)
        for (cls, confidence, entropy, energy, border, brightness), u in zip(answers, uploads, strict=True):
            score, flag = -1.0, -1
            if ref is not None:
                score = ref.score(energy, border)
                flag = int(score > ref.ood_threshold)
                fields.append({"unusual": bool(flag), "ood_score": round(score, 4)})
            else:
                fields.append({})
            rows.append(
                signals.Seen(
                    entry.name,
                    entry.version,
                    cls,
                    confidence,
                    entropy,
                    energy,
                    border,
                    brightness,
                    score,
                    flag,
                    u.width,
                    u.height,
                    int(u.grey),
                    int(u.rotated),
                )
            )
        self.observe(rows)
        return fields

    def sample(self, route: str, answer: dict[str, Any], images: Sequence[bytes]) -> None:
        """Offer a sampled request's answer (and images) to the payload sampler."""
        sampler = self.sampler
        if sampler is None or not sampler.draw():
            return
        record = {"route": route, "pid": os.getpid(), **{k: v for k, v in answer.items() if k != "timing_ms"}}
        sampler.offer(record, images[0] if len(images) == 1 else None)

    def observe(self, rows: list[signals.Seen]) -> None:
        raise NotImplementedError

    async def report(self, entry: ModelEntry) -> dict[str, Any]:
        raise NotImplementedError

    async def capture(self, entry: ModelEntry, samples: int) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()


class LocalWatch(Watch):
    """The service's: rows go straight into its live monitor."""

    def __init__(self, settings: Settings, monitor: Monitor, sampler: Sampler | None) -> None:
        super().__init__(settings, monitor.references, sampler)
        self.monitor = monitor

    def observe(self, rows: list[signals.Seen]) -> None:
        self.monitor.ingest(rows)

    async def report(self, entry: ModelEntry) -> dict[str, Any]:
        return self.monitor.report(entry)

    async def capture(self, entry: ModelEntry, samples: int) -> dict[str, Any]:
        return self.monitor.capture(entry, samples)


class LinkedWatch(Watch):
    """A front's: rows travel with its finished requests (OBSERVE, every 50 ms); reads are calls."""

    def __init__(
        self,
        settings: Settings,
        sampler: Sampler | None,
        send: Callable[[list[signals.Seen]], None],
        call: Callable[..., Awaitable[dict[str, Any]]],
    ) -> None:
        super().__init__(settings, references_of(settings), sampler)
        self.send = send
        self.call = call

    def observe(self, rows: list[signals.Seen]) -> None:
        self.send(rows)

    async def report(self, entry: ModelEntry) -> dict[str, Any]:
        return await self.call("monitor", name=entry.name)

    async def capture(self, entry: ModelEntry, samples: int) -> dict[str, Any]:
        return await self.call("monitor_capture", name=entry.name, samples=samples)
