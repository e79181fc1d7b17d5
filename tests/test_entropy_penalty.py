"""The entropy penalty (methods/entropy_penalty.py) at the reference code's scale
(docs/methods.md): the mean over B * K entries, pinned by hand for the default and the
alternative form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from calibench import get_method
from calibench.plugins import builtin_methods_dir, load_plugin_file

LN2 = math.log(2)


def plugin(stem: str):
    return load_plugin_file(builtin_methods_dir() / f"{stem}.py")


def log_probs(*rows: list[float]) -> torch.Tensor:
    """Logits log p, so that softmax gives back each row p exactly (rows sum to 1)."""
    return torch.tensor(rows, dtype=torch.float64).log()


# Entropy penalty, K = 4. Rows p = (1/2, 1/4, 1/8, 1/8) and (1/4, 1/4, 1/4, 1/4), y = (0, 3):
#   H_0 = 1/2 ln 2 + 1/4 * 2 ln 2 + 2 * 1/8 * 3 ln 2 = 1.75 ln 2, H_1 = 2 ln 2
#   per-sample entropy (class_sum): (1.75 + 2) / 2 = 1.875 ln 2
#   mean over the B * K = 8 entries (class_mean): (1.75 + 2) / 8 = 0.46875 ln 2
#   CE = (ln 2 + 2 ln 2) / 2 = 1.5 ln 2
Z_ENT = log_probs([0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25])
Y_ENT = torch.tensor([0, 3])


@pytest.mark.parametrize(
    ("reduction", "entropy_ln2"), [("class_mean", 0.46875), ("class_sum", 1.875)]
)
def test_entropy_penalty_by_hand(reduction: str, entropy_ln2: float) -> None:
    term = plugin("entropy_penalty").entropy_term(Z_ENT, reduction)
    assert term.item() == pytest.approx(entropy_ln2 * LN2, rel=1e-12)
    out = get_method("entropy_penalty", reduction=reduction).loss(nn.Identity(), Z_ENT, Y_ENT)
    assert out.total.item() == pytest.approx((1.5 - 0.1 * entropy_ln2) * LN2, rel=1e-12)
    assert out.terms["entropy"].item() == pytest.approx(entropy_ln2 * LN2, rel=1e-12)


def test_entropy_penalty_default_is_the_codes_penalty() -> None:
    """The MbLS / RankMixup code (calibrate/losses/penalty_entropy.py): p = softmax clamped to
    [1e-10, 1 - 1e-10], loss CE - 0.1 * mean over all B * K entries of -p log p."""
    torch.manual_seed(5)
    logits = 3 * torch.randn(16, 10, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (16,))
    p = F.softmax(logits, dim=1).clamp(1e-10, 1 - 1e-10)
    code = F.cross_entropy(logits, y) - 0.1 * (-p * p.log()).mean()
    ours = get_method("entropy_penalty").loss(nn.Identity(), logits, y).total
    assert_close(ours, code)
    assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(code, logits)[0])


def test_per_sample_entropy_is_k_times_the_codes_term() -> None:
    torch.manual_seed(6)
    logits = torch.randn(7, 10, dtype=torch.float64)
    entropy_term = plugin("entropy_penalty").entropy_term
    assert_close(entropy_term(logits, "class_sum"), 10 * entropy_term(logits, "class_mean"))
