"""Calibration metrics (calibench/evaluation/metrics.py) against golden vectors, hand arithmetic
and torchmetrics; smECE, debiased L2 CE, KS, over/under-confidence and AURC: golden values worked
out by hand, direct slow implementations, and the authors' packages (relplot,
uncertainty-calibration) when they are installed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import random_logits
from scipy.optimize import brentq
from scipy.stats import norm

from calibench.errors import CalibenchError
from calibench.evaluation import metrics as M
from calibench.evaluation import ood

GOLDEN_PROBS = np.array(
    [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]]
)
GOLDEN_LABELS = np.array([0, 1, 2, 0])
# Top label: confidences [.55, .55, .60, .90], correct [0, 0, 1, 1].


def two_class_probs(top: np.ndarray) -> np.ndarray:
    return np.stack([top, 1 - top], axis=1)


def test_golden_ece_three_bins():
    assert M.ece(GOLDEN_PROBS, GOLDEN_LABELS, n_bins=3) == pytest.approx(0.2)


def test_confidence_one_is_in_the_last_visible_bin():
    """p = [.95, 1.0], correct [1, 0], 15 bins: both in (14/15, 1], acc .5, conf .975 -> .475."""
    probs = two_class_probs(np.array([0.95, 1.0]))
    assert M.ece(probs, np.array([0, 1]), n_bins=15) == pytest.approx(0.475)


def test_confidence_on_lower_edge_of_first_bin_is_counted():
    conf = np.array([0.0, 0.7])
    bins = M.calibration_bins(conf, np.array([0.0, 1.0]), M.equal_width_edges(2))
    np.testing.assert_array_equal(bins.counts, [1, 1])


def test_interior_edge_belongs_to_lower_bin():
    bins = M.calibration_bins(np.array([0.5]), np.array([1.0]), M.equal_width_edges(2))
    np.testing.assert_array_equal(bins.counts, [1, 0])


def test_ece_hand_computed_two_bins():
    """conf .6 (right), .7 (wrong), .9 (right) in 2 bins: bin 2 has all three,
    acc 2/3, conf 2.2/3 -> |.6667 - .7333| = .0667."""
    probs = two_class_probs(np.array([0.6, 0.7, 0.9]))
    labels = np.array([0, 1, 0])
    assert M.ece(probs, labels, n_bins=2) == pytest.approx(abs(2 / 3 - 2.2 / 3))
    assert M.mce(probs, labels, n_bins=2) == pytest.approx(abs(2 / 3 - 2.2 / 3))


def test_mce_is_max_gap_over_filled_bins():
    probs = two_class_probs(np.array([0.55, 0.95]))
    labels = np.array([1, 0])
    assert M.mce(probs, labels, n_bins=10) == pytest.approx(0.55)


def test_adaece_equal_mass_bins():
    """Sorted conf [.6 right, .7 wrong, .8 right, .9 right], 2 bins: edges interp([0, 2, 4],
    arange(4), conf) = [.6, .8, .9]; bins {.6, .7, .8} and {.9}:
    (3/4)|2/3 - .7| + (1/4)|1 - .9| = .025 + .025 = .05."""
    probs = two_class_probs(np.array([0.6, 0.7, 0.8, 0.9]))
    labels = np.array([0, 1, 0, 0])
    np.testing.assert_allclose(M.equal_mass_edges(probs.max(axis=1), 2), [0.6, 0.8, 0.9])
    assert M.adaece(probs, labels, n_bins=2) == pytest.approx(0.05)


def test_adaece_bins_hold_equal_counts():
    conf = np.random.default_rng(0).uniform(0.3, 1.0, 300)
    edges = M.equal_mass_edges(conf, 15)
    bins = M.calibration_bins(conf, np.ones_like(conf), edges)
    assert bins.total == 300
    assert bins.counts.min() >= 19 and bins.counts.max() <= 21


def test_cece_hand_computed():
    """K = 2, one bin: class 0 probs mean .75 vs frequency .5; class 1 mean .25 vs .5
    -> (.25 + .25) / 2 = .25."""
    probs = two_class_probs(np.array([0.8, 0.7]))
    assert M.cece(probs, np.array([0, 1]), n_bins=1) == pytest.approx(0.25)


def test_cece_uses_all_classes_not_max_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 0])
    per_class = [
        M.calibration_bins(probs[:, k], labels == k, M.equal_width_edges(15)).expected_error()
        for k in range(3)
    ]
    assert M.cece(probs, labels) == pytest.approx(np.mean(per_class))
    assert M.cece(probs, labels) != pytest.approx(per_class[0])


def test_nll_and_brier_hand_computed():
    logits = np.array([[math.log(3.0), 0.0]])
    assert M.nll(logits, np.array([0])) == pytest.approx(-math.log(0.75))
    assert M.brier(M.softmax(logits), np.array([0])) == pytest.approx(0.25**2 * 2)


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    logits, labels = random_logits()
    probs = M.softmax(logits)
    assert probs.max(axis=1).max() < 1.0
    expected = multiclass_calibration_error(
        torch.tensor(probs), torch.tensor(labels), num_classes=10, n_bins=15, norm="l1"
    )
    assert M.ece(probs, labels) == pytest.approx(float(expected), abs=1e-6)


def test_torchmetrics_differs_only_at_confidence_one():
    """torchmetrics puts conf = 1.0 into a hidden extra bin (its issue 3510): 0.525 vs 0.475."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = two_class_probs(np.array([0.95, 1.0]))
    labels = np.array([0, 1])
    theirs = multiclass_calibration_error(
        torch.tensor(probs), torch.tensor(labels), num_classes=2, n_bins=15, norm="l1"
    )
    assert float(theirs) == pytest.approx(0.525, abs=1e-6)
    assert M.ece(probs, labels) == pytest.approx(0.475)


def test_ood_auroc_separates_confident_from_uniform():
    id_logits = np.array([[8.0, 0, 0], [0, 9.0, 0], [0, 0, 7.0]])
    ood_logits = np.array([[0.1, 0, 0], [0, 0.2, 0], [0.0, 0.0, 0.0]])
    scores = ood.ood_auroc(id_logits, ood_logits)
    assert scores == {"auroc_entropy": 1.0, "auroc_msp": 1.0}
    reversed_scores = ood.ood_auroc(ood_logits, id_logits)
    assert reversed_scores["auroc_entropy"] == 0.0


def test_normalised_entropy_bounds():
    h = ood.normalised_entropy(np.array([[1 / 3] * 3, [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(h, [1.0, 0.0], atol=1e-12)


def test_ece_matches_netcal_when_installed():
    netcal_metrics = pytest.importorskip("netcal.metrics")
    logits, labels = random_logits(seed=3)
    probs = M.softmax(logits)
    theirs = netcal_metrics.ECE(bins=15).measure(probs, labels)
    assert M.ece(probs, labels) == pytest.approx(float(theirs), abs=1e-6)


def binary(conf: list[float], correct: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities and labels whose top label has these confidences (>= .5) and
    correctness."""
    conf_arr = np.asarray(conf, dtype=np.float64)
    labels = np.where(np.asarray(correct) == 1, 0, 1)
    return two_class_probs(conf_arr), labels


def miscalibrated_binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences spread over [.3, .95]: over-confident in the middle, under-confident above."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.3, 0.95, n)
    p_true = np.clip(conf + 0.15 * np.sin(8 * conf), 0, 1)
    return conf, (rng.uniform(size=n) < p_true).astype(np.float64)


# ----- over- and under-confidence


def test_over_under_confidence_golden_three_bins():
    """3 bins: (1/3, 2/3] holds .55, .55, .60 with acc 1/3, conf 1.7/3, weight 3/4 -> over
    .175; (2/3, 1] holds .90 with acc 1, weight 1/4 -> under .025; ECE is .2."""
    oe, ue = M.over_under_confidence(GOLDEN_PROBS, GOLDEN_LABELS, n_bins=3)
    assert oe == pytest.approx(0.175)
    assert ue == pytest.approx(0.025)


@pytest.mark.parametrize("n_bins", [1, 3, 15, 40])
@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])
def test_over_plus_under_confidence_is_ece(n_bins, scale):
    probs = M.softmax(random_logits(scale=scale)[0])
    labels = random_logits(scale=scale)[1]
    oe, ue = M.over_under_confidence(probs, labels, n_bins)
    assert oe >= 0 and ue >= 0
    assert oe + ue == pytest.approx(M.ece(probs, labels, n_bins), rel=1e-12, abs=1e-15)


def test_over_confident_logits_have_no_under_confidence():
    conf = np.array([0.95, 0.9, 0.85, 0.8])
    probs, labels = binary(conf.tolist(), [1, 0, 0, 1])
    oe, ue = M.over_under_confidence(probs, labels, n_bins=1)
    assert ue == 0.0
    assert oe == pytest.approx(conf.mean() - 0.5)


# ----- debiased L2 calibration error


def test_split_equal_mass_edges_larger_groups_first():
    """5 values, 2 bins: groups of 3 and 2, inner edge halfway between .3 and .4."""
    edges = M.split_equal_mass_edges(np.array([0.5, 0.1, 0.4, 0.2, 0.3]), 2)
    np.testing.assert_allclose(edges, [0.0, 0.35, 1.0])


def test_debiased_l2_ce_golden():
    """Bins {.2,.3,.4,.5} all wrong and {.6,.7,.8,.9} with 3 of 4 right; inner edge .55.
    Bin 1: (0 - .35)^2 - 0 = .1225; bin 2: (.75 - .75)^2 - .75 * .25 / 3 = -.0625.
    Weights 1/2 each -> .03, so sqrt(.03)."""
    conf = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    correct = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    probs = np.column_stack([conf, np.repeat((1 - conf)[:, None] / 9, 9, axis=1)])
    labels = np.where(correct == 1, 0, 1)
    np.testing.assert_array_equal(M.top_label(probs, labels)[1], correct)
    assert M.debiased_l2_ce(probs, labels, n_bins=2) == pytest.approx(math.sqrt(0.03))


def test_debiased_l2_ce_clips_a_negative_estimate_to_zero():
    """Both bins at acc .5: (.5 - .35)^2 - .25/3 < 0 and (.5 - .75)^2 - .25/3 < 0 -> 0."""
    conf = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    correct = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    probs = np.column_stack([conf, np.repeat((1 - conf)[:, None] / 9, 9, axis=1)])
    labels = np.where(correct == 1, 0, 1)
    assert M.debiased_l2_ce(probs, labels, n_bins=2) == 0.0


def test_debiased_l2_ce_below_plugin_l2_ce():
    probs = M.softmax(random_logits(scale=5.0)[0])
    labels = random_logits(scale=5.0)[1]
    conf, hit = M.top_label(probs, labels)
    bins = M.calibration_bins(conf, hit, M.split_equal_mass_edges(conf, 15))
    plugin = math.sqrt(np.sum(bins.counts / bins.total * bins.gaps**2))
    debiased = M.debiased_l2_ce(probs, labels)
    assert 0 < debiased < plugin


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 3.0), (2, 6.0)])
def test_debiased_l2_ce_matches_uncertainty_calibration(seed, scale):
    calibration = pytest.importorskip("calibration")
    logits, labels = random_logits(n=3000, scale=scale, seed=seed)
    probs = M.softmax(logits)
    theirs = calibration.get_calibration_error(probs, labels, p=2, debias=True, mode="top-label")
    assert M.debiased_l2_ce(probs, labels) == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_debiased_l2_ce_matches_uncertainty_calibration_with_ties_and_other_bins():
    """Confidences rounded to 2 decimals put ties on bin edges; 7 bins, 1,003 samples."""
    utils = pytest.importorskip("calibration.utils")
    conf, hit = miscalibrated_binary(1003, seed=4)
    probs, labels = binary(np.round(np.maximum(conf, 0.5), 2).tolist(), hit.astype(int).tolist())
    theirs = utils.lower_bound_scaling_ce(
        probs, labels, p=2, debias=True, num_bins=7, mode="top-label"
    )
    assert M.debiased_l2_ce(probs, labels, n_bins=7) == pytest.approx(theirs, rel=1e-9)
    their_edges = utils.get_equal_bins(list(probs.max(axis=1)), num_bins=7)
    np.testing.assert_allclose(
        np.unique(M.split_equal_mass_edges(probs.max(axis=1), 7))[1:], their_edges
    )


# ----- KS calibration error


def test_ks_golden():
    """Ascending: .55 wrong, .55 wrong, .60 right, .90 right; cumulative conf - correct over N=4
    at the end of each tie group: 1.1/4 = .275, .7/4 = .175, .6/4 = .15 -> .275."""
    assert M.ks_error(GOLDEN_PROBS, GOLDEN_LABELS) == pytest.approx(0.275)


def test_ks_no_ties_hand_computed():
    """Ascending .6 right, .7 wrong, .9 right: cumulative conf - correct -.4, .3, .2, over N = 3
    -> max |.| = .4/3."""
    probs, labels = binary([0.9, 0.6, 0.7], [1, 1, 0])
    assert M.ks_error(probs, labels) == pytest.approx(0.4 / 3)


def test_ks_order_inside_ties_does_not_matter():
    """Two samples at .5, one right, one wrong: the curves meet at the end of the tie (0), where a
    sample-by-sample maximum would give .25 or 0 depending on the order."""
    for correct in ([1, 0], [0, 1]):
        probs, labels = binary([0.5, 0.5], correct)
        assert M.ks_error(probs, labels) == 0.0


def test_ks_matches_loop_over_thresholds():
    probs = M.softmax(random_logits(n=400, scale=2.0, seed=5)[0])
    labels = random_logits(n=400, scale=2.0, seed=5)[1]
    conf, hit = M.top_label(probs, labels)
    expected = max(abs(np.sum((conf - hit)[conf <= threshold])) / len(conf) for threshold in conf)
    assert M.ks_error(probs, labels) == pytest.approx(expected, rel=1e-12)


# ----- AURC


def aurc_loop(conf: np.ndarray, correct: np.ndarray, order: np.ndarray) -> float:
    """The definition, O(N^2): mean over k of the error rate of the first k samples of order."""
    err = 1.0 - correct[order]
    return float(np.mean([err[:k].sum() / k for k in range(1, len(conf) + 1)]))


def test_aurc_golden():
    """Descending .90 right, .60 right, .55 wrong, .55 wrong: risks 0, 0, 1/3, 1/2 -> 5/24."""
    assert M.aurc(GOLDEN_PROBS, GOLDEN_LABELS) == pytest.approx(5 / 24)


def test_aurc_ties_average_over_orders():
    """.9 right, then .7 right and .7 wrong tied: orders give (0 + 0 + 1/3)/3 = 1/9 and
    (0 + 1/2 + 1/3)/3 = 5/18; calibench gives their mean 7/36 in any input order."""
    for correct in ([1, 1, 0], [1, 0, 1]):
        probs, labels = binary([0.9, 0.7, 0.7], correct)
        assert M.aurc(probs, labels) == pytest.approx(7 / 36)


def test_aurc_matches_loop_without_ties():
    probs = M.softmax(random_logits(n=500, scale=2.0, seed=6)[0])
    labels = random_logits(n=500, scale=2.0, seed=6)[1]
    conf, hit = M.top_label(probs, labels)
    assert len(np.unique(conf)) == len(conf)
    expected = aurc_loop(conf, hit, np.argsort(-conf))
    assert M.aurc(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_aurc_with_ties_is_the_mean_over_every_tie_order():
    """Groups of 3 and 2 tied samples among 7: the mean of the O(N^2) loop over all 3! * 2!
    orders inside the groups."""
    conf = np.array([0.95, 0.8, 0.8, 0.8, 0.7, 0.6, 0.6])
    correct = np.array([1, 0, 1, 0, 1, 1, 0])
    probs, labels = binary(conf.tolist(), correct.tolist())
    values = [
        aurc_loop(conf, correct.astype(np.float64), np.array([0, *g3, 4, *g2]))
        for g3 in itertools.permutations([1, 2, 3])
        for g2 in itertools.permutations([5, 6])
    ]
    assert M.aurc(probs, labels) == pytest.approx(np.mean(values), rel=1e-12)
    shuffled = np.random.default_rng(0).permutation(len(conf))
    assert M.aurc(probs[shuffled], labels[shuffled]) == pytest.approx(np.mean(values), rel=1e-12)


def test_aurc_bounds():
    probs, labels = binary([0.9, 0.8, 0.7], [1, 1, 1])
    assert M.aurc(probs, labels) == 0.0
    probs, labels = binary([0.9, 0.8, 0.7], [0, 0, 0])
    assert M.aurc(probs, labels) == 1.0


# ----- smooth ECE


def reflected_gaussian_smece(conf: np.ndarray, correct: np.ndarray, sigma: float) -> float:
    """Direct O(N * grid) evaluation: the residual smoothed by the Gaussian plus its mirror
    images at 0 and 1 (centres 2k +- conf), integrated by the trapezoid rule on 8,001 points."""
    t = np.linspace(0.0, 1.0, 8_001)
    smoothed = np.zeros_like(t)
    for k in range(-3, 4):
        for centre in (2 * k + conf, 2 * k - conf):
            z = (t[:, None] - centre[None, :]) / sigma
            smoothed += np.exp(-0.5 * z**2) @ (correct - conf)
    smoothed /= len(conf) * sigma * math.sqrt(2 * math.pi)
    return float(np.trapezoid(np.abs(smoothed), t))


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.5])
def test_smece_matches_direct_kernel_sum(sigma):
    conf, hit = miscalibrated_binary(150, seed=1)
    ours, used = M.smooth_ece_from_confidence(conf, hit, sigma)
    assert used == sigma
    assert ours == pytest.approx(reflected_gaussian_smece(conf, hit, sigma), rel=1e-5)


def test_smece_single_sample_is_its_residual():
    """One sample: the kernel integrates to 1, so smECE(sigma) = |correct - conf| = .7 for every
    sigma, and the fixed point is sigma = .7."""
    probs, labels = binary([0.7], [0])
    value, sigma = M.smooth_ece_from_confidence(*M.top_label(probs, labels))
    assert value == pytest.approx(0.7, abs=1e-9)
    assert sigma == pytest.approx(0.7, abs=1e-9)


def test_smece_one_signed_residual_is_mean_gap():
    """Residuals -.6, -.8, -.95, 0: the smoothed residual is <= 0 everywhere, nothing cancels, and
    smECE = mean(conf) - acc = 3.35/4 - 1/4 = .5875 for every sigma."""
    probs, labels = binary([0.6, 0.8, 0.95, 1.0], [0, 0, 0, 1])
    for sigma in (0.01, 0.1, None):
        assert M.smooth_ece(probs, labels, sigma) == pytest.approx(0.5875, abs=1e-9)


def test_smece_two_mirrored_samples_hand_computed():
    """conf .25 right (residual +.75) and conf .75 wrong (-.75): g is antisymmetric about 1/2,
    so smECE = .75 (2P - 1) with P = Pr(reflected N(.25, s^2) <= 1/2), i.e. the normal mass on
    the union over k of [2k - 1/2, 2k + 1/2]; its fixed point solves .75 (2P(s) - 1) = s.
    The trapezoid rule's error at the sign change at 1/2 is a few 1e-6 (docs/metrics.md)."""

    def closed_form(s: float) -> float:
        p = sum(norm.cdf((2 * k + 0.25) / s) - norm.cdf((2 * k - 0.75) / s) for k in range(-3, 4))
        return 0.75 * (2 * p - 1)

    conf, correct = np.array([0.25, 0.75]), np.array([1.0, 0.0])
    for s in (0.05, 0.1, 0.15):
        assert M.smooth_ece_from_confidence(conf, correct, s)[0] == pytest.approx(
            closed_form(s), rel=1e-5
        )
    fixed = brentq(lambda s: closed_form(s) - s, 0.01, 0.5, xtol=1e-12)
    value, sigma = M.smooth_ece_from_confidence(conf, correct)
    assert sigma == pytest.approx(fixed, rel=1e-5)
    assert value == pytest.approx(fixed, rel=1e-5)


def test_smece_cancelling_residuals_are_zero_at_the_smallest_bandwidth():
    """Residuals +.5 and -.5 at the same confidence cancel for every sigma."""
    value, sigma = M.smooth_ece_from_confidence(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert value == pytest.approx(0.0, abs=1e-12)
    assert sigma == M.SMECE_MIN_SIGMA


def test_smece_is_its_bandwidth_and_falls_with_sigma():
    conf, hit = miscalibrated_binary(5000, seed=2)
    value, sigma = M.smooth_ece_from_confidence(conf, hit)
    assert value == pytest.approx(sigma, abs=1e-9)
    curve = [M.smooth_ece_from_confidence(conf, hit, s)[0] for s in (0.005, 0.02, 0.08, 0.3)]
    assert all(a >= b for a, b in zip(curve, curve[1:], strict=False))


def test_smece_rejects_too_small_bandwidth():
    conf, hit = miscalibrated_binary(10, seed=3)
    with pytest.raises(CalibenchError, match="sigma >= 0.001"):
        M.smooth_ece_from_confidence(conf, hit, 1e-4)


@pytest.mark.parametrize("n,seed", [(500, 0), (10_000, 1)])
def test_smece_close_to_relplot(n, seed):
    """relplot brackets the fixed point to 2^-10 and smooths on a mesh of about 1,000 cells, so
    it agrees to about 1e-3 where the confidences do not pile up at 1 (docs/metrics.md)."""
    relplot = pytest.importorskip("relplot")
    conf, hit = miscalibrated_binary(n, seed)
    for sigma in (0.02, 0.05, 0.1):
        ours = M.smooth_ece_from_confidence(conf, hit, sigma)[0]
        assert ours == pytest.approx(float(relplot.smECE_sigma(conf, hit, sigma)), abs=1e-3)
    ours, sigma = M.smooth_ece_from_confidence(conf, hit)
    theirs, their_sigma = relplot.smECE(conf, hit, return_width=True)
    assert ours == pytest.approx(float(theirs), abs=1e-3)
    assert their_sigma == pytest.approx(sigma, abs=2**-10 + 1e-3)


# ----- calibration_metrics, METRIC_NAMES and METRIC_INFO


def test_calibration_metrics_returns_metric_names_in_order():
    logits, labels = random_logits(n=500)
    assert tuple(M.calibration_metrics(logits, labels)) == M.METRIC_NAMES
    assert tuple(M.METRIC_INFO) == M.METRIC_NAMES
    assert {"smece", "dece_l2", "ks", "oe", "ue", "aurc"} <= set(M.METRIC_NAMES)
    for name, info in M.METRIC_INFO.items():
        assert info.name == name and info.label and info.description
        assert info.unit in ("percent", "plain") and isinstance(info.lower_is_better, bool)
    assert M.METRIC_INFO["acc"].lower_is_better is False
    assert M.metrics_in("interval") == ("nll", "ece", "adaece")
    assert set(M.resampled_metrics()) == {"acc", "nll", "brier", "ece", "adaece", "cece", "mce"}


def test_calibration_metrics_values_are_the_public_functions():
    logits, labels = random_logits(n=800, scale=4.0, seed=7)
    probs = M.softmax(logits)
    result = M.calibration_metrics(logits, labels, n_bins=10)
    oe, ue = M.over_under_confidence(probs, labels, 10)
    expected = {
        "acc": M.accuracy(probs, labels),
        "nll": M.nll(logits, labels),
        "brier": M.brier(probs, labels),
        "ece": M.ece(probs, labels, 10),
        "adaece": M.adaece(probs, labels, 10),
        "cece": M.cece(probs, labels, 10),
        "mce": M.mce(probs, labels, 10),
        "smece": M.smooth_ece(probs, labels),
        "dece_l2": M.debiased_l2_ce(probs, labels, 10),
        "ks": M.ks_error(probs, labels),
        "oe": oe,
        "ue": ue,
        "aurc": M.aurc(probs, labels),
    }
    assert result == expected
    assert result["oe"] + result["ue"] == pytest.approx(result["ece"], rel=1e-12)


@pytest.mark.parametrize(
    "logits,labels,message",
    [
        (np.zeros(4), np.zeros(4, dtype=int), "shape"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "N >= 1"),
        (np.zeros((4, 3)), np.zeros(3, dtype=int), "one integer label per row"),
        (np.zeros((4, 3)), np.zeros(4), "one integer label per row"),
        (np.zeros((4, 3)), np.array([0, 1, 2, 3]), "0..2"),
        (np.zeros((4, 3)), np.array([0, -1, 2, 1]), "0..2"),
    ],
)
def test_calibration_metrics_rejects_bad_input(logits, labels, message):
    with pytest.raises(CalibenchError, match=message):
        M.calibration_metrics(logits, labels)


def test_calibration_metrics_nan_logits_give_nan_not_an_error():
    logits, labels = random_logits(n=50)
    logits[3] = np.nan
    result = M.calibration_metrics(logits, labels)
    for name in ("ece", "smece", "dece_l2", "ks", "oe", "ue", "aurc"):
        assert math.isnan(result[name]), name
