"""Choosing a model by constraints, and the accuracy-versus-cost frontier: pure functions over candidates.

A candidate carries the registry's figures and the latency measured on this host (where it was
measured, and how). Nothing here reads files, clocks or the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from service.core.errors import InvalidParameter, NoModelFits

LatencySource = Literal["live", "calibration", "registry"]
CostAxis = Literal["latency", "size", "gflops"]
COST_AXES: tuple[CostAxis, ...] = ("latency", "size", "gflops")
CLOSEST = 3  # candidates named when nothing fits
AUTO = "auto"  # the model name that asks for a choice by constraints


@dataclass(frozen=True)
class Candidate:
    """One model as selection sees it."""

    name: str
    dataset: str
    weights: str  # "trained" | "pretrained" | "random"
    status: str  # "loaded" | "available" | "loading" | "unavailable"
    status_reason: str | None
    top1: float | None
    accuracy_source: str | None
    size_mb: float | None
    gflops: float
    latency_ms: float | None  # measured on this host, None if never measured here
    latency_source: LatencySource | None = None
    latency_samples: int | None = None

    def cost(self, axis: CostAxis) -> float | None:
        return {"latency": self.latency_ms, "size": self.size_mb, "gflops": self.gflops}[axis]


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    min_top1: float | None = None
    max_size_mb: float | None = None
    dataset: str | None = None

    def given(self) -> dict[str, float | str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Failure:
    constraint: str  # a constraint's name, or "weights" / "accuracy" / "status" for models never chosen
    detail: str
    excess: float = math.inf  # relative distance to the limit; infinite for the exclusions


@dataclass(frozen=True)
class Verdict:
    candidate: Candidate
    failures: tuple[Failure, ...] = field(default_factory=tuple)

    @property
    def fits(self) -> bool:
        return not self.failures

    @property
    def eligible(self) -> bool:
        """Could be chosen if the numeric constraints were looser."""
        return all(math.isfinite(f.excess) for f in self.failures)

    def as_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "name": c.name,
            "top1": c.top1,
            "accuracy_source": c.accuracy_source,
            "latency_ms": _round(c.latency_ms),
            "latency_source": c.latency_source,
            "size_mb": c.size_mb,
            "status": c.status,
            "fits": self.fits,
            "failed": [{"constraint": f.constraint, "detail": f.detail} for f in self.failures],
        }


@dataclass(frozen=True)
class Selection:
    chosen: Candidate
    dataset: str
    constraints: Constraints
    considered: tuple[Verdict, ...]  # the chosen one first, then the other fits, then the rest

    def as_dict(self) -> dict[str, Any]:
        c = self.chosen
        return {
            "chosen": c.name,
            "dataset": self.dataset,
            "constraints": self.constraints.given(),
            "reason": _reason(c, sum(v.fits for v in self.considered)),
            "considered": [v.as_dict() for v in self.considered],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _reason(c: Candidate, fits: int) -> str:
    latency = (
        "latency not measured here"
        if c.latency_ms is None
        else f"{c.latency_ms:.4g} ms p50 ({c.latency_source})"
    )
    return (
        f"the most accurate of {fits} model(s) meeting every constraint: "
        f"top-1 {c.top1:.4f} ({c.accuracy_source}), {latency}"
    )


def resolve_dataset(candidates: list[Candidate], dataset: str | None) -> str:
    """The dataset to choose within: the given one, or the only one; else InvalidParameter."""
    datasets = sorted({c.dataset for c in candidates})
    if dataset is None:
        if len(datasets) == 1:
            return datasets[0]
        raise InvalidParameter(
            f"The registry has models of several datasets; pass dataset= one of: {', '.join(datasets)}."
        )
    if dataset not in datasets:
        raise InvalidParameter(
            f"Unknown dataset {dataset!r}; the registry has: {', '.join(datasets) or 'none'}."
        )
    return dataset


def judge(c: Candidate, k: Constraints) -> Verdict:
    """Every constraint `c` fails, exclusions first."""
    failures: list[Failure] = []
    if c.weights == "random":
        failures.append(Failure("weights", "random weights: its predictions mean nothing"))
    if c.top1 is None:
        failures.append(Failure("accuracy", "no measured or published accuracy"))
    if c.status == "unavailable":
        failures.append(Failure("status", f"unavailable: {c.status_reason or 'unknown reason'}"))
    if k.max_latency_ms is not None:
        if c.latency_ms is None:
            failures.append(Failure("max_latency_ms", "latency not measured on this host"))
        elif c.latency_ms > k.max_latency_ms:
            failures.append(
                Failure(
                    "max_latency_ms",
                    f"p50 {c.latency_ms:.4g} ms ({c.latency_source}) > {k.max_latency_ms:g} ms",
                    c.latency_ms / k.max_latency_ms - 1,
                )
            )
    if k.min_top1 is not None and c.top1 is not None and c.top1 < k.min_top1:
        failures.append(
            Failure(
                "min_top1",
                f"top-1 {c.top1:.4f} < {k.min_top1:g}",
                (k.min_top1 - c.top1) / max(k.min_top1, 1e-9),
            )
        )
    if k.max_size_mb is not None:
        if c.size_mb is None:
            failures.append(Failure("max_size_mb", "size unknown (artifact not built)"))
        elif c.size_mb > k.max_size_mb:
            failures.append(
                Failure(
                    "max_size_mb", f"{c.size_mb:g} MB > {k.max_size_mb:g} MB", c.size_mb / k.max_size_mb - 1
                )
            )
    return Verdict(c, tuple(failures))


def _rank(c: Candidate) -> tuple[float, float, str]:
    # Most accurate first; ties: lower measured latency (unmeasured last), then name.
    return (-(c.top1 or 0.0), c.latency_ms if c.latency_ms is not None else math.inf, c.name)


def _closeness(v: Verdict) -> tuple[bool, int, float, tuple[float, float, str]]:
    return (not v.eligible, len(v.failures), sum(f.excess for f in v.failures), _rank(v.candidate))


def select(candidates: list[Candidate], constraints: Constraints) -> Selection:
    """The most accurate candidate of the dataset meeting every constraint; NoModelFits with the closest."""
    dataset = resolve_dataset(candidates, constraints.dataset)
    verdicts = [judge(c, constraints) for c in candidates if c.dataset == dataset]
    fits = sorted((v for v in verdicts if v.fits), key=lambda v: _rank(v.candidate))
    rest = sorted((v for v in verdicts if not v.fits), key=_closeness)
    if not fits:
        closest = [v for v in rest if v.eligible][:CLOSEST]
        named = "; ".join(f"{v.candidate.name}: " + ", ".join(f.detail for f in v.failures) for v in closest)
        raise NoModelFits(
            f"No {dataset} model meets the constraints"
            + (
                f". Closest: {named}."
                if named
                else "; no model of it has real weights, an accuracy and an artifact."
            ),
            extensions={
                "dataset": dataset,
                "constraints": constraints.given(),
                "closest": [v.as_dict() for v in closest],
            },
        )
    return Selection(fits[0].candidate, dataset, constraints, tuple(fits + rest))


@dataclass(frozen=True)
class FrontierPoint:
    candidate: Candidate
    cost: float


def pareto(candidates: list[Candidate], axis: CostAxis) -> list[FrontierPoint]:
    """Models no other model beats on both accuracy and `axis` cost, in order of increasing cost.

    Only models that could be chosen count: real weights, an accuracy, a known cost, not unavailable.
    At equal cost only the most accurate stays; at equal accuracy only the cheapest."""
    points = [
        FrontierPoint(c, cost)
        for c in candidates
        if c.weights != "random"
        and c.top1 is not None
        and c.status != "unavailable"
        and (cost := c.cost(axis)) is not None
    ]
    points.sort(key=lambda p: (p.cost, -(p.candidate.top1 or 0.0), p.candidate.name))
    frontier: list[FrontierPoint] = []
    for p in points:
        if not frontier or (p.candidate.top1 or 0.0) > (frontier[-1].candidate.top1 or 0.0):
            frontier.append(p)
    return frontier
