"""The mixing diagnostic (calibench/evaluation/mixing.py): golden curves of hand-built models, the
ordering agreement by hand, and a stored digits run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from store_helpers import specs_of
from torch import nn

from calibench.errors import CalibenchError
from calibench.evaluation.metrics import softmax
from calibench.evaluation.mixing import mixing_curve, mixing_diagnostic, order_agreement, relevance
from calibench.store.index import Store

GRID = np.linspace(0.0, 1.0, 11)


class Scaled(nn.Module):
    """Logits c * x for flat two-pixel images: a mix of the one-hot images e_0 and e_1 has
    confidence sigmoid(c |2l - 1|), which grows with the relevance max(l, 1 - l)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c * x.flatten(1)


class MixLover(nn.Module):
    """Logits (0.1 x0, 0.1 x1, 10 x0 x1): the third logit peaks on an even mix, so confidence
    falls as relevance grows (the unmixed images, e^.1 / (e^.1 + 2) = .36, are the least
    confident)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return torch.stack([0.1 * x[:, 0], 0.1 * x[:, 1], 10 * x[:, 0] * x[:, 1]], dim=1)


def one_hot_images(n: int) -> tuple[torch.Tensor, np.ndarray]:
    labels = np.arange(n) % 2
    return torch.eye(2)[labels].view(n, 1, 1, 2), labels


def test_relevance_pairs_l_with_one_minus_l_exactly():
    rel = relevance(GRID)
    assert len(set(rel)) == 6
    np.testing.assert_array_equal(rel, rel[::-1])


def test_order_agreement_by_hand():
    """Grid [0, .25, .5] has relevance [1, .75, .5]: three comparable (a, b) orders per pair.
    Pair 1 (.9, .7, .6) agrees on all three; pair 2 (.9, .5, .5) on (0, .25) and (0, .5) but
    ties on (.25, .5), which counts against: 5 of 6."""
    conf = np.array([[0.9, 0.9], [0.7, 0.5], [0.6, 0.5]])
    fraction, comparisons = order_agreement(conf, np.array([0.0, 0.25, 0.5]))
    assert comparisons == 6
    assert fraction == pytest.approx(5 / 6)


def test_eleven_point_grid_has_fifty_orders_per_pair():
    """Relevance groups {1, .9, .8, .7, .6} of two values and {.5} of one: 2 * (9 + 7 + 5 + 3 +
    1) = 50 ordered comparisons per pair."""
    _, comparisons = order_agreement(np.zeros((11, 3)), GRID)
    assert comparisons == 50 * 3


def test_golden_curve_of_a_monotone_model():
    images, labels = one_hot_images(40)
    result = mixing_curve(Scaled(3.0), images, labels, GRID, seed=0)
    expected = 1 / (1 + np.exp(-3.0 * np.abs(2 * GRID - 1)))
    np.testing.assert_allclose(result.mean_confidence, expected, rtol=1e-6)
    assert result.raw_confidence == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-6)
    assert result.agreement == 1.0
    assert result.n_comparisons == 50 * result.n_pairs
    assert 0 < result.n_pairs <= 40


def test_a_model_confident_on_mixes_disagrees():
    images, labels = one_hot_images(40)
    result = mixing_curve(MixLover(), images, labels, GRID, seed=0)
    assert result.agreement == 0.0
    assert result.mean_confidence[5] > result.mean_confidence[0]


def test_same_label_pairs_are_left_out():
    images, labels = one_hot_images(40)
    partner = np.random.default_rng(0).permutation(40)
    result = mixing_curve(Scaled(1.0), images, labels, GRID, seed=0)
    assert result.n_pairs == int(np.sum(labels != labels[partner]))
    with pytest.raises(CalibenchError, match="different labels"):
        mixing_curve(Scaled(1.0), images[labels == 0], labels[labels == 0], GRID)


@pytest.fixture
def run_dir(trained):
    """The shared store's ce run (one epoch on digits), read only."""
    return Store(trained).run_dir(specs_of(["ce"], 1)[0])


def test_stored_run_raw_confidence_matches_its_saved_logits(run_dir):
    """All 360 digits test images (under the cap): the unmixed mean confidence is that of the
    run's own saved test logits."""
    result = mixing_diagnostic(run_dir, max_samples=1000)
    with np.load(run_dir / "logits.npz") as f:
        saved = softmax(f["test_logits"]).max(axis=1).mean()
    assert result.raw_confidence == pytest.approx(saved, abs=1e-6)
    assert result.mean_confidence.shape == (11,)
    assert ((0 < result.mean_confidence) & (result.mean_confidence <= 1)).all()
    assert 0 <= result.agreement <= 1
    again = mixing_diagnostic(run_dir, max_samples=1000)
    np.testing.assert_array_equal(again.mean_confidence, result.mean_confidence)


def test_sample_cap_and_grid_setting(run_dir):
    result = mixing_diagnostic(run_dir, max_samples=50, n_lambdas=5)
    assert result.n_pairs <= 50 and result.lambdas.tolist() == [0, 0.25, 0.5, 0.75, 1]
    with pytest.raises(CalibenchError, match="at least 2"):
        mixing_diagnostic(run_dir, max_samples=1)


def test_missing_weights_are_a_clear_error(run_dir, tmp_path):
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(CalibenchError, match="best.pt"):
        mixing_diagnostic(tmp_path)
