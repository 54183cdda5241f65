"""A model version's reference: what its answers and inputs look like on data it was measured on, for
drift statistics and out-of-distribution scores. Written by the export stage beside the artifact
(`reference:` in the registry entry, `python -m export reference`), or captured by the service from a
first window of traffic on an operator's request (into the captured-references directory).

The out-of-distribution score of an image is the larger of two ranks among the reference's own images:
its energy's (-logsumexp of the logits: a model's outputs are flatter on what it was not trained for)
and its border's distance from the reference's typical border (what surrounds the object: black in
Fashion-MNIST, anything in a photo). `unusual` is a score above the reference's own (1 - fpr) quantile,
so that at most `fpr` of images like the reference's are flagged. Measured on fmnist-lenet5 (10,000
test images, 21 scikit-image photos): energy alone flags 95% of the photos at 5% FPR, with the border
100% (docs/bench-monitor.md).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import json
import re
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.core.registry import ModelEntry
from service.monitor import statistics as st
from service.monitor.signals import Signals

REFERENCE_FPR = 0.05  # the share of reference-like images an answer may flag as unusual
QUANTILE_POINTS = 501  # a sorted stand-in for each score's reference sample (KS, ranks): 0.2% steps
BINS = 10  # deciles of the reference: PSI's bins for confidence and brightness
RECHECK_S = 1.0  # how often a process looks again for a reference file that appeared or changed


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    version: str
    source: str  # e.g. "fashion-mnist test split", "captured from traffic"
    created: dt.datetime
    samples: int = Field(ge=1)
    class_prior: list[float]  # share of predictions per class
    confidence_edges: list[float]  # inner bin edges (deciles), and the share of each bin
    confidence_shares: list[float]
    brightness_edges: list[float]
    brightness_shares: list[float]
    entropy: list[float]  # quantile points (sorted)
    energy: list[float]
    border_distance: list[float]  # |border - border_median|, quantile points
    border_median: float
    ood_fpr: float = Field(gt=0, lt=1)
    ood_threshold: float

    def scores(self, signals: Signals) -> np.ndarray:
        """Each image's out-of-distribution score, 0..1 (see the module)."""
        energy, border_distance = self._sorted
        by_energy = st.ranks(energy, signals.energy)
        by_border = st.ranks(border_distance, np.abs(signals.border - self.border_median))
        result: np.ndarray = np.maximum(by_energy, by_border)
        return result

    def score(self, energy: float, border: float) -> float:
        """`scores` of one image, in plain Python (a request's single image: no array calls)."""
        n_energy, n_border = len(self.energy), len(self.border_distance)
        by_energy = bisect.bisect_left(self.energy, energy) / n_energy
        by_border = bisect.bisect_left(self.border_distance, abs(border - self.border_median)) / n_border
        return max(by_energy, by_border)

    @functools.cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:  # once, not per request
        return np.asarray(self.energy), np.asarray(self.border_distance)

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "created": self.created.isoformat(),
            "samples": self.samples,
            "ood_fpr": self.ood_fpr,
            "ood_threshold": round(self.ood_threshold, 6),
            "class_prior": [round(p, 6) for p in self.class_prior],
        }


def _decile_bins(values: np.ndarray) -> tuple[list[float], list[float]]:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    return edges.tolist(), st.shares(values, edges).tolist()


def build(
    model: str, version: str, source: str, signals: Signals, num_classes: int, fpr: float = REFERENCE_FPR
) -> Reference:
    """The reference of `signals`, the answers of a model version on data it should see."""
    if len(signals.classes) < 2:
        raise ValueError("a reference needs at least two images")
    median = float(np.median(signals.border))
    distance = np.abs(signals.border - median)
    conf_edges, conf_shares = _decile_bins(signals.confidence)
    bright_edges, bright_shares = _decile_bins(signals.brightness)
    draft = Reference(
        model=model,
        version=version,
        source=source,
        created=dt.datetime.now(dt.UTC).replace(microsecond=0),
        samples=len(signals.classes),
        class_prior=st.class_shares(signals.classes, num_classes).tolist(),
        confidence_edges=conf_edges,
        confidence_shares=conf_shares,
        brightness_edges=bright_edges,
        brightness_shares=bright_shares,
        entropy=st.quantile_points(signals.entropy, QUANTILE_POINTS).tolist(),
        energy=st.quantile_points(signals.energy, QUANTILE_POINTS).tolist(),
        border_distance=st.quantile_points(distance, QUANTILE_POINTS).tolist(),
        border_median=median,
        ood_fpr=fpr,
        ood_threshold=1.0,
    )
    threshold = float(np.quantile(draft.scores(signals), 1 - fpr))
    return draft.model_copy(update={"ood_threshold": threshold})


def save(reference: Reference, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(reference.model_dump_json(), encoding="utf-8")
    tmp.replace(path)


def load(path: Path) -> Reference:
    return Reference.model_validate(json.loads(path.read_text(encoding="utf-8")))


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


class References:
    """The reference of each model version, read from its file and looked at again every RECHECK_S, so
    that one captured by the service reaches every process that answers. A captured reference takes
    precedence over the export stage's; one whose version is not the entry's is ignored."""

    def __init__(self, models_dir: Path, captured_dir: Path) -> None:
        self.models_dir = models_dir
        self.captured_dir = captured_dir
        self._cache: dict[tuple[str, str], tuple[float, Reference | None, tuple[float, ...]]] = {}

    def captured_path(self, name: str, version: str) -> Path:
        return self.captured_dir / _safe(name) / f"{_safe(version)}.json"

    def _paths(self, entry: ModelEntry) -> list[Path]:
        paths = [self.captured_path(entry.name, entry.version)]
        if entry.reference:
            paths.append(self.models_dir / entry.reference)
        return paths

    def get(self, entry: ModelEntry) -> Reference | None:
        key = (entry.name, entry.version)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < RECHECK_S:
            return cached[1]
        paths = self._paths(entry)
        stamps = tuple(_mtime(p) for p in paths)
        if cached is not None and cached[2] == stamps:
            self._cache[key] = (now, cached[1], stamps)
            return cached[1]
        found = self._read(entry, paths)
        self._cache[key] = (now, found, stamps)
        return found

    def put(self, entry: ModelEntry, reference: Reference) -> None:
        """A reference just captured here: known at once, without waiting for the next look."""
        self._cache.pop((entry.name, entry.version), None)
        save(reference, self.captured_path(entry.name, entry.version))

    @staticmethod
    def _read(entry: ModelEntry, paths: list[Path]) -> Reference | None:
        for path in paths:
            if not path.is_file():
                continue
            try:
                reference = load(path)
            except (OSError, ValueError):
                continue  # a half-written or foreign file: as if absent
            if reference.model == entry.name and reference.version == entry.version:
                return reference
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
