"""The client's parts without a service: inputs expanded, Retry-After read, records written and read back,
the journal kept across runs."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path

import pytest

from convzoo import files, journal, output
from convzoo.records import Prediction, Record
from convzoo.sending import RetryPolicy, parse_retry_after


def test_inputs_expand_to_image_files_once_each(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.jpg", "a/deep/2.PNG", "a/notes.txt", "b.webp", "c.dat"):
        (tmp_path / name).write_bytes(b"x")
    got = files.expand(
        [str(tmp_path / "a"), str(tmp_path / "*.webp"), str(tmp_path / "a/1.jpg"), str(tmp_path / "c.dat")]
    )
    assert got == [tmp_path / "a/1.jpg", tmp_path / "a/deep/2.PNG", tmp_path / "b.webp", tmp_path / "c.dat"]
    assert (
        files.content_type(got[1]) == "image/png" and files.content_type(got[3]) == "application/octet-stream"
    )
    with pytest.raises(files.NoSuchInput):
        files.expand([str(tmp_path / "*.gif")])
    with pytest.raises(files.NoSuchInput):
        files.expand([str(tmp_path / "missing.jpg")])


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    assert (
        parse_retry_after("3") == 3.0
        and parse_retry_after(None) is None
        and parse_retry_after("soon") is None
    )
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 17 < (parse_retry_after(later) or 0) <= 20
    policy = RetryPolicy(retries=3, max_wait_s=5)
    assert policy.wait_s(0, "2") == 2 and policy.wait_s(0, "120") == 5
    assert 0.25 <= policy.wait_s(0, None) <= 0.75 and 1 <= policy.wait_s(2, None) <= 3  # backoff with jitter


RECORDS = [
    Record(
        "/p/a,b.png", 200, 1, "m", "v1", [Prediction('say "hi"', 0.75, 3), Prediction("x", 0.25, 1)], False
    ),
    Record("/p/broken.png", 400, 1, error="not an image, really"),
    Record("/p/busy.png", 503, 6, error="overloaded"),
    Record("/p/far.png", None, 6, error="no answer"),
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_records_read_back_as_written(fmt: output.Format) -> None:
    text = output.header(fmt) + "".join(output.encode(r, fmt) for r in RECORDS)
    back = output.decode(text, fmt)
    assert [(r.path, r.http_status, r.ok, r.final, r.label, r.error) for r in back] == [
        (r.path, r.http_status, r.ok, r.final, r.label, r.error) for r in RECORDS
    ]
    assert [r.final for r in RECORDS] == [True, True, False, False]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_journal_keeps_final_records_and_drops_a_cut_line(tmp_path: Path, fmt: output.Format) -> None:
    path = tmp_path / f"out.{fmt}"
    first = journal.open_file(path, fmt, fresh=False)
    for r in RECORDS:
        first.write(r)
    first.close()
    with path.open("a") as f:
        f.write(output.encode(Record("/p/cut.png", 200, 1), fmt)[:9])  # a line cut short by a kill
    second = journal.open_file(path, fmt, fresh=False)
    assert set(second.done) == {"/p/a,b.png", "/p/broken.png"}
    second.write(Record("/p/busy.png", 200, 1, "m", "v1", [Prediction("x", 1.0, 0)]))
    second.close()
    back = output.decode(path.read_text(), fmt)
    assert [r.path for r in back] == ["/p/a,b.png", "/p/broken.png", "/p/busy.png"]
    if fmt == "jsonl":
        assert json.loads(path.read_text().splitlines()[0])["predictions"][0]["label"] == 'say "hi"'


def test_the_journal_refuses_a_file_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(journal.ForeignOutput):
        journal.open_file(path, "jsonl", fresh=False)
    assert path.read_text() == '{"a": 1}\n'
    journal.open_file(path, "jsonl", fresh=True).close()
    assert path.read_text() == ""
