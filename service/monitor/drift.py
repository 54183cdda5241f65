"""Drift of a model version's live answers from its reference, over a sliding window: PSI on the
predicted-class prior, on top-1 confidence and on input brightness, and a two-sample Kolmogorov-Smirnov
test on output entropy. Each statistic has its threshold; a window drifts when any is passed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.monitor import statistics as st
from service.monitor.reference import Reference

# PSI above 0.25 is the conventional "significant shift". A window of 200 unshifted answers over ten
# bins gives PSI about chi-square(9)/200: 0.045 on average, 0.14 at its 99.9th percentile.
PSI_THRESHOLD = 0.25
# The KS test's level: with four statistics checked on every window, 0.001 keeps false alarms rare.
KS_ALPHA = 0.001
_KS_C = math.sqrt(-0.5 * math.log(KS_ALPHA / 2))  # c(alpha) of the critical D, 1.95 at 0.001


@dataclass(frozen=True)
class Window:
    """A window's answers, as arrays."""

    classes: np.ndarray
    confidence: np.ndarray
    entropy: np.ndarray
    brightness: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Statistic:
    name: str
    value: float
    threshold: float
    p_value: float | None = None

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "name": self.name,
            "value": round(self.value, 6),
            "threshold": round(self.threshold, 6),
            "exceeded": self.exceeded,
        }
        if self.p_value is not None:
            body["p_value"] = round(self.p_value, 8)
        return body


def ks_critical(n: int, m: int) -> float:
    """The two-sample KS statistic above which two samples of n and m differ at level KS_ALPHA."""
    return _KS_C * math.sqrt((n + m) / (n * m))


def statistics(reference: Reference, window: Window) -> list[Statistic]:
    """The drift statistics of `window` against `reference` (a window of at least one answer)."""
    n, m = len(window), reference.samples
    num_classes = len(reference.class_prior)
    observed_prior = st.class_shares(window.classes, num_classes)
    confidence = st.shares(window.confidence, np.asarray(reference.confidence_edges))
    brightness = st.shares(window.brightness, np.asarray(reference.brightness_edges))
    d = st.ks_statistic(window.entropy, np.asarray(reference.entropy))
    return [
        Statistic(
            "psi_class_prior", st.psi(np.asarray(reference.class_prior), observed_prior), PSI_THRESHOLD
        ),
        Statistic(
            "psi_confidence", st.psi(np.asarray(reference.confidence_shares), confidence), PSI_THRESHOLD
        ),
        Statistic(
            "psi_brightness", st.psi(np.asarray(reference.brightness_shares), brightness), PSI_THRESHOLD
        ),
        Statistic("ks_entropy", d, ks_critical(n, m), st.kolmogorov_p(d, n, m)),
    ]


def drifting(stats: list[Statistic]) -> bool:
    return any(s.exceeded for s in stats)
