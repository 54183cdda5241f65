"""The small statistics of drift and of out-of-distribution scores, in NumPy (SciPy is no dependency of
the service): per-answer signals of a batch, the population stability index, the two-sample
Kolmogorov-Smirnov test, and ranks against a reference's quantiles."""

from __future__ import annotations

import math

import numpy as np

# A bin a population leaves empty counts as this share, so that PSI stays finite (the usual floor: one
# in ten thousand, far below what any window of a few hundred answers can resolve).
PSI_FLOOR = 1e-4


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of probabilities."""
    p = np.clip(probs, 1e-300, 1.0)
    result: np.ndarray = -(probs * np.log(p)).sum(axis=-1)
    return result


def energy(logits: np.ndarray) -> np.ndarray:
    """The free energy of each row of logits, -logsumexp (Liu et al., 2020): higher is less familiar."""
    z = logits.astype(np.float64)
    top = z.max(axis=-1)
    result: np.ndarray = -(top + np.log(np.exp(z - top[..., None]).sum(axis=-1)))
    return result


def border(batch: np.ndarray, channel_sums: np.ndarray | None = None) -> np.ndarray:
    """The mean of each input tensor's outermost ring of pixels (N x C x H x W): a cheap sign of what
    surrounds the object (Fashion-MNIST's is black; a photo's is not). The whole minus the inside: two
    reductions (`channel_sums`, batch.sum(axis=(2, 3)), where the caller has it)."""
    c, h, w = batch.shape[1:]
    sums = batch.sum(axis=(2, 3), dtype=np.float64) if channel_sums is None else channel_sums
    inside = batch[:, :, 1:-1, 1:-1].sum(axis=(1, 2, 3), dtype=np.float64)
    ring = c * (h * w - max(h - 2, 0) * max(w - 2, 0))
    result: np.ndarray = (sums.sum(axis=1) - inside) / max(ring, 1)
    return result


def psi(reference: np.ndarray, observed: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (each sums to 1):
    sum (o - r) ln(o / r). Below 0.1: stable; 0.1-0.25: moderate shift; above 0.25: significant."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), PSI_FLOOR)
    o = np.maximum(np.asarray(observed, dtype=np.float64), PSI_FLOOR)
    r, o = r / r.sum(), o / o.sum()
    return float(((o - r) * np.log(o / r)).sum())


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin between consecutive inner `edges` (len(edges) + 1 bins; a value
    equal to an edge falls in the bin above it, as in the reference)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    result: np.ndarray = counts / max(len(values), 1)
    return result


def class_shares(classes: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=num_classes)[:num_classes]
    result: np.ndarray = counts / max(len(classes), 1)
    return result


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def kolmogorov_p(d: float, n: int, m: int) -> float:
    """The asymptotic p-value of a two-sample KS statistic `d` for samples of n and m: the Kolmogorov
    distribution's survival function at sqrt(nm/(n+m)) d, with Stephens' small-sample correction."""
    en = math.sqrt(n * m / (n + m))
    x = (en + 0.12 + 0.11 / en) * d
    if x < 0.2:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * x * x)
        total += term
        if abs(term) < 1e-12:
            break
    return min(max(total, 0.0), 1.0)


def ranks(sorted_reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of the reference below each value (0..1): a score's place among the reference's own."""
    result: np.ndarray = np.searchsorted(sorted_reference, values, side="left") / max(
        len(sorted_reference), 1
    )
    return result


def quantile_points(values: np.ndarray, points: int) -> np.ndarray:
    """`points` evenly spaced quantiles of `values` (0 to 1 inclusive): a sorted stand-in for the sample."""
    points_ = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, points))
    result: np.ndarray = np.round(points_, 6)  # six decimals: far finer than any window resolves
    return result
