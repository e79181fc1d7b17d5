"""Bootstrap intervals over test samples: resampled metrics against calibench.evaluation.metrics
on the resampled rows, the percentile interval against numpy, and coverage on synthetic data
with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from calibench.errors import CalibenchError
from calibench.evaluation import bootstrap as B
from calibench.evaluation import metrics as M

REFERENCE = {
    "acc": lambda z, y: M.accuracy(M.softmax(z), y),
    "nll": M.nll,
    "brier": lambda z, y: M.brier(M.softmax(z), y),
    "ece": lambda z, y: M.ece(M.softmax(z), y),
    "adaece": lambda z, y: M.adaece(M.softmax(z), y),
    "cece": lambda z, y: M.cece(M.softmax(z), y),
    "mce": lambda z, y: M.mce(M.softmax(z), y),
}


def logits_from(conf: np.ndarray, correct: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Logits whose top-label confidence is ``conf`` and whose prediction is right where
    ``correct``; the other classes share the remaining mass."""
    n = len(conf)
    wrong = (labels + 1 + np.arange(n) % (k - 1)) % k
    probs = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    probs[np.arange(n), np.where(correct, labels, wrong)] = conf
    return np.log(probs)


def miscalibrated_pair(rng: np.random.Generator, n: int, k: int = 10):
    """Two models with the same confidences c ~ U(0.5, 1) on one test set; A is right with
    probability c - 0.3 and B with c - 0.15 (shared uniforms, so paired). In every bin the gap
    is exactly 0.3 for A and 0.15 for B: population ECE_A = 0.3, ECE_B = 0.15."""
    conf = rng.uniform(0.5, 1.0, n)
    u = rng.uniform(size=n)
    labels = rng.integers(0, k, n)
    return (
        logits_from(conf, u < conf - 0.3, labels, k),
        logits_from(conf, u < conf - 0.15, labels, k),
        labels,
    )


def random_logits(rng: np.random.Generator, n: int, k: int, rounded: bool = False):
    logits = rng.normal(size=(n, k)) * 2
    if rounded:
        logits = np.round(logits)
    return logits, rng.integers(0, k, n)


@pytest.mark.parametrize("name", B.RESAMPLED_METRICS)
@pytest.mark.parametrize(("n", "k", "rounded"), [(300, 5, False), (300, 4, True), (10, 3, False)])
def test_resampled_metric_equals_metric_of_resampled_rows(name, n, k, rounded):
    """Rounded logits give tied confidences (edges on samples); n = 10 < 15 bins puts equal-mass
    edges past the last sample."""
    rng = np.random.default_rng(n + k)
    logits, labels = random_logits(rng, n, k, rounded)
    indices = rng.integers(0, n, (25, n))
    fast = B.resample_metric(name, logits, labels)(indices)
    slow = [REFERENCE[name](logits[i], labels[i]) for i in indices]
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_adaptive_edges_round_like_numpy_interp():
    """n = 8, 15 bins: the first interior edge interpolates 0.53 of the way from 0.6 to the next
    float, which rounds up onto that sample and so moves it into the lower bin."""
    conf = np.array([0.6, np.nextafter(0.6, 1), 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    hit = np.array([0.0, 1, 1, 0, 1, 1, 0, 1])
    edges = M.equal_mass_edges(conf, 15)
    assert edges[1] == conf[1]
    expected = M.calibration_bins(conf, hit, edges).expected_error()
    assert B._adaptive_ece(conf, hit, 15)(np.ones((1, 8)))[0] == pytest.approx(expected, abs=1e-15)


def test_ts_suffix_uses_the_same_metric_on_the_given_logits():
    logits, labels = random_logits(np.random.default_rng(0), 200, 5)
    indices = np.random.default_rng(1).integers(0, 200, (5, 200))
    np.testing.assert_array_equal(
        B.resample_metric("ece_ts", logits / 2, labels)(indices),
        B.resample_metric("ece", logits / 2, labels)(indices),
    )


def test_bootstrap_is_deterministic_for_a_seed():
    logits, labels = random_logits(np.random.default_rng(0), 500, 10)
    first = B.bootstrap_interval("ece", logits, labels, n_resamples=200, seed=3)
    assert B.bootstrap_interval("ece", logits, labels, n_resamples=200, seed=3) == first
    assert B.bootstrap_interval("ece", logits, labels, n_resamples=200, seed=4) != first


def test_named_metric_and_function_draw_the_same_resamples():
    logits, labels = random_logits(np.random.default_rng(2), 300, 10)
    named = B.bootstrap_interval("adaece", logits, labels, n_resamples=150, seed=7)
    function = B.bootstrap_interval(REFERENCE["adaece"], logits, labels, n_resamples=150, seed=7)
    assert function == pytest.approx(named, rel=1e-10)


def test_interval_is_the_percentile_interval_of_resampled_values():
    """Same draws as scipy's resampler: generator(seed).integers(0, n, (batch, n)) per batch."""
    logits, labels = random_logits(np.random.default_rng(5), 200, 4)
    rng = np.random.default_rng(11)
    indices = np.concatenate([rng.integers(0, 200, (100, 200)) for _ in range(3)])
    values = [REFERENCE["nll"](logits[i], labels[i]) for i in indices]
    expected = np.percentile(values, [2.5, 97.5])
    got = B.bootstrap_interval("nll", logits, labels, n_resamples=300, seed=11)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_bootstrap_interval_covers_the_true_ece_at_the_stated_rate():
    draws, hits = 200, 0
    for draw in range(draws):
        a, _, labels = miscalibrated_pair(np.random.default_rng(draw), 1000)
        low, high = B.bootstrap_interval("ece", a, labels, n_resamples=200, seed=draw)
        hits += low <= 0.3 <= high
    assert 0.90 <= hits / draws <= 0.99


def test_paired_bootstrap_covers_the_true_ece_difference_at_the_stated_rate():
    draws, hits = 200, 0
    for draw in range(draws):
        a, b, labels = miscalibrated_pair(np.random.default_rng(1000 + draw), 1000)
        low, high = B.paired_bootstrap_interval("ece", [a], [b], labels, 200, seed=draw)
        hits += low <= 0.15 <= high
    assert 0.90 <= hits / draws <= 0.99


def test_paired_bootstrap_resamples_a_and_b_together():
    """One seed: the interval of ECE(A) - ECE(B) where both see the same rows, written as one
    function of the side-by-side logits."""
    rng = np.random.default_rng(4)
    a, b, labels = miscalibrated_pair(rng, 400, k=5)

    def difference(z: np.ndarray, y: np.ndarray) -> float:
        return REFERENCE["ece"](z[:, :5], y) - REFERENCE["ece"](z[:, 5:], y)

    joint = B.bootstrap_interval(difference, np.hstack([a, b]), labels, n_resamples=120, seed=9)
    paired = B.paired_bootstrap_interval("ece", [a], [b], labels, n_resamples=120, seed=9)
    assert paired == pytest.approx(joint, rel=1e-10)


def test_seeds_with_their_own_test_sets_are_resampled_independently():
    rng = np.random.default_rng(8)
    (a1, b1, y1), (a2, b2, y2) = miscalibrated_pair(rng, 300), miscalibrated_pair(rng, 200)
    low, high = B.paired_bootstrap_interval("ece", [a1, a2], [b1, b2], [y1, y2], 200, seed=1)
    mean = np.mean([REFERENCE["ece"](a1, y1) - REFERENCE["ece"](b1, y1),
                    REFERENCE["ece"](a2, y2) - REFERENCE["ece"](b2, y2)])  # fmt: skip
    assert low < mean < high
    assert B.paired_bootstrap_interval("ece", [a1, a2], [b1, b2], [y1, y2], 200, 0.95, 1) == (
        low,
        high,
    )


def test_a_metric_without_a_bootstrap_is_a_clear_error():
    with pytest.raises(CalibenchError, match="no bootstrap"):
        B.bootstrap_interval("smece", np.zeros((3, 2)), np.zeros(3, dtype=int))
