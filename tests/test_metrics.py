"""Calibration metrics against golden vectors, hand arithmetic and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import random_logits

from calibench.evaluation import metrics as M
from calibench.evaluation import ood

GOLDEN_PROBS = np.array(
    [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]]
)
GOLDEN_LABELS = np.array([0, 1, 2, 0])


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
