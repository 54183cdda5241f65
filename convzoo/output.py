"""The output formats, CSV and JSON lines: a record to a line and back, so that a rerun can resume."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from convzoo.records import Prediction, Record

Format = Literal["jsonl", "csv"]

CSV_COLUMNS = [
    "path",
    "status",
    "http_status",
    "model",
    "version",
    "label",
    "score",
    "predictions",
    "unusual",
    "error",
    "attempts",
]


def header(fmt: Format) -> str:
    return _csv_line(CSV_COLUMNS) if fmt == "csv" else ""


def encode(record: Record, fmt: Format) -> str:
    """One whole line (newline included), written at once so that an interrupted run leaves whole lines."""
    if fmt == "jsonl":
        return json.dumps(_json(record), ensure_ascii=False) + "\n"
    top = "; ".join(f"{p.label}: {p.score:.4f}" for p in record.predictions)
    row = [
        record.path,
        "ok" if record.ok else "error",
        "" if record.http_status is None else str(record.http_status),
        record.model or "",
        record.version or "",
        record.label or "",
        "" if record.score is None else f"{record.score:.6f}",
        top,
        "" if record.unusual is None else str(record.unusual).lower(),
        record.error or "",
        str(record.attempts),
    ]
    return _csv_line(row)


def _json(record: Record) -> dict[str, Any]:
    return {
        "path": record.path,
        "status": "ok" if record.ok else "error",
        "http_status": record.http_status,
        "model": record.model,
        "version": record.version,
        "label": record.label,
        "score": record.score,
        "predictions": [{"label": p.label, "score": p.score, "index": p.index} for p in record.predictions],
        "unusual": record.unusual,
        "error": record.error,
        "attempts": record.attempts,
    }


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def decode(text: str, fmt: Format) -> list[Record]:
    """The records of an output file's text; a last line cut short (the process killed while writing it)
    and lines that are no record are left out."""
    if fmt == "jsonl":
        return [r for line in text.splitlines() if (r := _from_json(line)) is not None]
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for row in rows if (r := _from_row(row)) is not None]


def _from_json(line: str) -> Record | None:
    try:
        d = json.loads(line)
        predictions = [
            Prediction(str(p["label"]), float(p["score"]), int(p["index"])) for p in d["predictions"]
        ]
        return Record(
            str(d["path"]),
            None if d["http_status"] is None else int(d["http_status"]),
            int(d["attempts"]),
            model=d.get("model"),
            version=d.get("version"),
            predictions=predictions,
            unusual=d.get("unusual"),
            error=d.get("error"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _from_row(row: dict[str, str | None]) -> Record | None:
    try:
        path, status, attempts = row["path"], row["http_status"], row["attempts"]
        if not path or status is None or not attempts:
            return None
        predictions = []
        label, score = row.get("label"), row.get("score")
        if label and score:  # the top-1 is enough for a record that is only skipped
            predictions = [Prediction(label, float(score), -1)]
        return Record(
            path,
            int(status) if status else None,
            int(attempts),
            model=row.get("model") or None,
            version=row.get("version") or None,
            predictions=predictions,
            error=row.get("error") or None,
        )
    except (ValueError, KeyError, TypeError):
        return None
