"""One line of a run's output: a file's classification or its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Answers worth asking again in a later run: the service was busy or down, or the rate was exceeded.
# Any other 4xx says the file itself is bad (undecodable, too large, not an image) and stays as it is.
TRANSIENT_4XX = {408, 429}


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    index: int


@dataclass(frozen=True)
class Record:
    path: str
    http_status: int | None  # None: no answer (connection refused, timed out)
    attempts: int
    model: str | None = None
    version: str | None = None
    predictions: list[Prediction] = field(default_factory=list)
    unusual: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.error is None

    @property
    def final(self) -> bool:
        """True when a rerun should skip the file: classified, or refused for what the file is."""
        s = self.http_status
        return self.ok or (s is not None and 400 <= s < 500 and s not in TRANSIENT_4XX)

    @property
    def label(self) -> str | None:
        return self.predictions[0].label if self.predictions else None

    @property
    def score(self) -> float | None:
        return self.predictions[0].score if self.predictions else None


def from_answer(path: str, status: int, body: Any, attempts: int) -> Record:
    """The record of a service's answer: `body` the parsed JSON (None when it was not JSON)."""
    if status == 200 and isinstance(body, dict) and body.get("results"):
        result = body["results"][0]
        predictions = [
            Prediction(str(p["label"]), float(p["score"]), int(p["index"])) for p in result["predictions"]
        ]
        return Record(
            path,
            status,
            attempts,
            model=body.get("model"),
            version=body.get("version"),
            predictions=predictions,
            unusual=result.get("unusual"),
        )
    return Record(path, status, attempts, error=_detail(status, body))


def _detail(status: int, body: Any) -> str:
    # Problem details (API.md) say it in `detail`; /v2 and proxies in front of the service otherwise.
    if isinstance(body, dict):
        for key in ("detail", "error", "title"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return f"HTTP {status}"
