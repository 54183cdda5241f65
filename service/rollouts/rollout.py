"""What a rollout is judged by: requests per version (the canary's observed share) and, per pair of
versions, the shadow's answers compared with the primary's on live traffic (top-1 agreement with its
Wilson interval, confidence deltas, both latencies). Plain data, kept in the process that runs the models.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RECENT = 4096  # latencies kept per version of a pair: p99 rests on 40 samples at the window's fill
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sound near 0 and 1 and for small n, unlike the normal
    approximation); (0, 1) when nothing was seen."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _percentile(values: deque[float], q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if values else None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


@dataclass
class Comparison:
    """A shadow version against the version that answered, over the requests copied to it."""

    requests: int = 0
    images: int = 0
    agreements: int = 0  # images whose top-1 class is the same
    confidence_delta_sum: float = 0.0  # shadow minus primary probability of the primary's top-1 class
    confidence_delta_abs_sum: float = 0.0
    primary_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    shadow_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    def record(self, primary: np.ndarray, shadow: np.ndarray, primary_ms: float, shadow_ms: float) -> int:
        """One request's logits of both versions; returns how many of its images agreed."""
        p, s = _softmax(primary.astype(np.float64)), _softmax(shadow.astype(np.float64))
        top = p.argmax(axis=1)
        agreed = int((top == s.argmax(axis=1)).sum())
        rows = np.arange(len(top))
        delta = s[rows, top] - p[rows, top]
        self.requests += 1
        self.images += len(top)
        self.agreements += agreed
        self.confidence_delta_sum += float(delta.sum())
        self.confidence_delta_abs_sum += float(np.abs(delta).sum())
        self.primary_ms.append(primary_ms)
        self.shadow_ms.append(shadow_ms)
        return agreed

    def summary(self) -> dict[str, Any]:
        low, high = wilson(self.agreements, self.images)
        n = max(self.images, 1)
        return {
            "requests": self.requests,
            "images": self.images,
            "agreement": self.agreements / self.images if self.images else None,
            "agreement_interval": [low, high],
            "confidence_delta_mean": self.confidence_delta_sum / n if self.images else None,
            "confidence_delta_abs_mean": self.confidence_delta_abs_sum / n if self.images else None,
            "primary_latency_ms": {
                "p50": _percentile(self.primary_ms, 50),
                "p99": _percentile(self.primary_ms, 99),
            },
            "shadow_latency_ms": {
                "p50": _percentile(self.shadow_ms, 50),
                "p99": _percentile(self.shadow_ms, 99),
            },
        }


@dataclass
class Rollouts:
    """Every model's rollout figures since start-up."""

    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, version): policy requests
    pinned: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, version): pinned requests
    shed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, shadow version): not copied
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, shadow version)
    pairs: dict[tuple[str, str, str], Comparison] = field(default_factory=dict)  # (model, primary, shadow)

    def pair(self, model: str, primary: str, shadow: str) -> Comparison:
        found = self.pairs.get((model, primary, shadow))
        if found is None:
            found = self.pairs[(model, primary, shadow)] = Comparison()
        return found

    def of(self, model: str) -> dict[str, Any]:
        return {
            "served": {v: n for (m, v), n in self.served.items() if m == model},
            "pinned": {v: n for (m, v), n in self.pinned.items() if m == model},
            "shadow": [
                {"primary": p, "shadow": s, **c.summary()}
                for (m, p, s), c in self.pairs.items()
                if m == model
            ],
            "shadow_shed": {v: n for (m, v), n in self.shed.items() if m == model},
            "shadow_failed": {v: n for (m, v), n in self.failed.items() if m == model},
        }
