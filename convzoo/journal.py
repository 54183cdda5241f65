"""The output file as the run's journal: each record appended and flushed as it comes, so that an
interrupted run leaves a valid file, and a rerun skips the files it already holds."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from convzoo.output import Format, decode, encode, header
from convzoo.records import Record


class ForeignOutput(ValueError):
    """An existing output file that holds no records of ours: never overwritten without --fresh."""


class Journal:
    def __init__(self, stream: TextIO, fmt: Format, done: dict[str, Record]) -> None:
        self.stream, self.fmt = stream, fmt
        self.done = done  # path -> the record kept from earlier runs

    def write(self, record: Record) -> None:
        self.stream.write(encode(record, self.fmt))
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


def to_stdout(fmt: Format) -> Journal:
    sys.stdout.write(header(fmt))
    return Journal(sys.stdout, fmt, {})


def open_file(path: Path, fmt: Format, *, fresh: bool) -> Journal:
    """The journal in `path`. Without `fresh`, the records already there that need no second try (a
    classification, or a 4xx about the file) are kept and their files skipped; the others (503s
    that ran out of retries, no answer) are dropped, to be tried again."""
    text = "" if fresh or not path.exists() else path.read_text(encoding="utf-8")
    done = _final_records(text, fmt, path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write(header(fmt))
        out.writelines(encode(r, fmt) for r in done.values())
    os.replace(tmp, path)  # the earlier file stays whole until the new one is complete
    return Journal(path.open("a", encoding="utf-8", newline=""), fmt, done)


def _final_records(text: str, fmt: Format, path: Path) -> dict[str, Record]:
    if not text.strip():
        return {}
    if fmt == "csv" and text.splitlines()[0] + "\n" != header(fmt):
        raise ForeignOutput(
            f"{path} is not a convzoo CSV output (its header differs); pass --fresh to overwrite it"
        )
    records = decode(text, fmt)
    if not records:
        raise ForeignOutput(f"{path} holds no convzoo records; pass --fresh to overwrite it")
    return {r.path: r for r in records if r.final}
