"""Payload sampling (off by default): a sampled share of requests' metadata and predictions, optionally
the image, as JSON lines in a directory, for audits and for building the next reference or test set.

A request never waits for it: a record goes into a bounded queue, which one writer thread empties; a
full queue drops the record and counts it. Each process writes its own files
(`samples-<pid>-<n>.jsonl`), rotated at `file_bytes`; after each rotation the directory's oldest files,
any process's, are removed until all of them together are within `max_bytes`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import queue
import random
import threading
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("convzoo.monitor")

QUEUE_RECORDS = 1024  # at most this many records wait for the writer; beyond, records are dropped
PATTERN = "samples-*.jsonl"


class Sampler:
    def __init__(
        self,
        directory: Path,
        *,
        share: float,
        images: bool,
        file_bytes: int,
        max_bytes: int,
        seed: int | None = None,
    ) -> None:
        self.directory = directory
        self.share = share
        self.images = images
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self.dropped = 0
        self.written = 0
        self._random = random.Random(seed)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_RECORDS)
        self._sequence = 0
        self._file: TextIO | None = None
        self._size = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="convzoo-sampler", daemon=True)
        self._thread.start()

    def draw(self) -> bool:
        """Whether this request is sampled."""
        return self.share > 0 and self._random.random() < self.share

    def offer(self, record: dict[str, Any], image: bytes | None = None) -> bool:
        """Queue a record (the image too, where configured); False when it was dropped."""
        if self.images and image is not None:
            record = {**record, "image_base64": base64.b64encode(image).decode("ascii")}
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued, then stop the writer."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                break
            try:
                self._write(record)
            except (OSError, TypeError, ValueError) as exc:  # a full or vanished directory, an odd record:
                self.dropped += 1  # this record is lost, the writer goes on with the next
                log.warning("payload sampling could not write: %s", exc)
                self._close_file()
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _write(self, record: dict[str, Any]) -> None:
        line = (
            json.dumps({"time": dt.datetime.now(dt.UTC).isoformat(), **record}, separators=(",", ":")) + "\n"
        )
        data = line.encode()
        if self._file is None or self._size + len(data) > self.file_bytes:
            self._rotate()
        assert self._file is not None
        self._file.write(line)
        self._file.flush()
        self._size += len(data)
        self.written += 1

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        self._sequence += 1
        path = self.directory / f"samples-{os.getpid()}-{self._sequence:06d}.jsonl"
        self._file = path.open("w", encoding="utf-8")
        self._size = 0
        self._prune(keep=path)

    def _prune(self, keep: Path) -> None:
        files = []
        for path in self.directory.glob(PATTERN):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed by another process meanwhile
            files.append((stat.st_mtime, path.name, path, stat.st_size))
        files.sort()
        total = sum(f[3] for f in files) + self.file_bytes  # the new file may grow to file_bytes
        for _, _, path, size in files:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
