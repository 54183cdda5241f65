"""The monitor's small statistics (service/monitor/statistics.py, drift.py) against known values: SciPy
(a test dependency, not the service's) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from service.core.registry import Preprocessing
from service.images.postprocess import softmax
from service.monitor import drift, signals
from service.monitor import statistics as st


def test_psi_of_known_distributions() -> None:
    r = np.array([0.5, 0.5])
    o = np.array([0.8, 0.2])
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)  # 0.4159
    assert st.psi(r, o) == pytest.approx(expected)
    assert st.psi(r, r) == 0.0
    assert math.isfinite(st.psi(r, np.array([1.0, 0.0])))  # an empty bin is floored, not infinite


def test_ks_statistic_and_p_value_match_scipy() -> None:
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.3, 1.0):
        a, b = rng.normal(size=200), rng.normal(shift, size=1000)
        d = st.ks_statistic(a, b)
        assert d == pytest.approx(stats.ks_2samp(a, b).statistic)
        en = math.sqrt(200 * 1000 / 1200)
        assert st.kolmogorov_p(d, 200, 1000) == pytest.approx(
            stats.kstwobign.sf((en + 0.12 + 0.11 / en) * d), abs=1e-9
        )


def test_the_ks_critical_value_is_the_level_of_the_asymptotic_distribution() -> None:
    n, m = 200, 10_000
    d = drift.ks_critical(n, m)
    assert stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * d) == pytest.approx(drift.KS_ALPHA, rel=1e-6)


def test_entropy_and_energy_of_known_outputs() -> None:
    uniform = np.full((1, 4), 0.25)
    assert st.entropy(uniform)[0] == pytest.approx(math.log(4))
    assert st.entropy(np.array([[1.0, 0.0]]))[0] == 0.0
    logits = np.array([[1.0, 2.0, 3.0]])
    assert st.energy(logits)[0] == pytest.approx(-math.log(math.e + math.e**2 + math.e**3))


def test_border_is_the_mean_of_the_outer_ring() -> None:
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 0, :] = 1.0  # top row: 5 of the ring's 16 pixels
    assert st.border(x)[0] == pytest.approx(5 / 16)


def test_shares_and_ranks() -> None:
    edges = np.array([0.5])
    assert st.shares(np.array([0.1, 0.5, 0.9, 0.2]), edges).tolist() == [0.5, 0.5]
    assert st.ranks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.5, 9.0])).tolist() == [0.0, 0.5, 1.0]


def test_one_image_and_a_batch_give_the_same_signals() -> None:
    """The request's plain-Python path (`of_image`) and the export stage's arrays (`of_batch`) agree."""
    rng = np.random.default_rng(1)
    pre = Preprocessing(
        color_mode="RGB",
        resize=8,
        crop=8,
        interpolation="bilinear",
        mean=[0.4, 0.5, 0.6],
        std=[0.2, 0.3, 0.25],
    )
    logits = (rng.normal(size=(5, 10)) * 4).astype(np.float32)
    probs = softmax(logits)
    batch = rng.normal(size=(5, 3, 8, 8)).astype(np.float32)
    s = signals.of_batch(logits, probs, batch, pre)
    for i, one in enumerate(signals.of_answers(logits, probs, batch, pre)):
        assert one[0] == s.classes[i]
        assert one[1:] == pytest.approx(
            (s.confidence[i], s.entropy[i], s.energy[i], s.border[i], s.brightness[i]), rel=1e-5, abs=1e-6
        )
    assert s.entropy == pytest.approx(st.entropy(probs))
    assert s.energy == pytest.approx(st.energy(logits))
