"""RegMixup (methods/mixup.py) at the reference code's scale (docs/methods.md): the
concatenated-batch mean, pinned by hand for the default and the alternative form, and through
the method's loss on random draws."""

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


# RegMixup. Clean rows p = (1/2, 1/4, 1/4), (1/4, 1/2, 1/4) with y = (0, 1): CE_clean = ln 2.
# Mixed rows p = (1/2, 1/4, 1/4), (1/4, 1/4, 1/2), l = 0.75, y = (0, 1), y[perm] = (2, 0):
#   CE(z_mix, y)       = (ln 2 + 2 ln 2) / 2   = 1.5 ln 2
#   CE(z_mix, y[perm]) = (2 ln 2 + 2 ln 2) / 2 = 2 ln 2
#   CE_mix = 0.75 * 1.5 ln 2 + 0.25 * 2 ln 2   = 1.625 ln 2
Z_CLEAN = log_probs([0.5, 0.25, 0.25], [0.25, 0.5, 0.25])
Z_MIX = log_probs([0.5, 0.25, 0.25], [0.25, 0.25, 0.5])
Y = torch.tensor([0, 1])
Y_OTHER = torch.tensor([2, 0])
LAM = 0.75


@pytest.mark.parametrize(
    ("eta", "reduction", "expected_ln2"),
    [
        (1.0, "batch_mean", (1 + 1.625) / 2),  # 1.3125: the RegMixup code's loss
        (1.0, "sum", 1 + 1.625),  # 2.625: the paper's written form, twice the code's
        (0.5, "batch_mean", (1 + 0.5 * 1.625) / 2),  # 0.90625
        (0.5, "sum", 1 + 0.5 * 1.625),  # 1.8125
    ],
)
def test_regmixup_loss_by_hand(eta: float, reduction: str, expected_ln2: float) -> None:
    out = plugin("mixup").regmixup_loss(Z_CLEAN, Z_MIX, Y, Y_OTHER, LAM, eta, reduction)
    assert out.total.item() == pytest.approx(expected_ln2 * LN2, rel=1e-12)
    assert out.terms["ce"].item() == pytest.approx(LN2, rel=1e-12)
    assert out.terms["mixup_ce"].item() == pytest.approx(1.625 * LN2, rel=1e-12)


def test_regmixup_default_is_the_codes_concatenated_cross_entropy() -> None:
    """The RegMixup code (models/regmixup.py) mixes the targets of the concatenated 2B batch:
    l * CE(z, [y, y]) + (1 - l) * CE(z, [y, y[perm]]), each CE a mean over 2B rows.
    By hand: CE(z, [0, 1, 0, 1]) = (1 + 1 + 1 + 2) ln 2 / 4 = 1.25 ln 2 and
    CE(z, [0, 1, 2, 0]) = (1 + 1 + 2 + 2) ln 2 / 4 = 1.5 ln 2, so 0.75 * 1.25 + 0.25 * 1.5
    = 1.3125 (times ln 2), the default above."""
    z = torch.cat([Z_CLEAN, Z_MIX])
    code = LAM * F.cross_entropy(z, torch.cat([Y, Y])) + (1 - LAM) * F.cross_entropy(
        z, torch.cat([Y, Y_OTHER])
    )
    assert code.item() == pytest.approx(1.3125 * LN2, rel=1e-12)
    ours = plugin("mixup").regmixup_loss(Z_CLEAN, Z_MIX, Y, Y_OTHER, LAM)
    assert_close(ours.total, code)


def test_regmixup_method_matches_the_code_on_random_draws() -> None:
    """Through .loss(): the default equals the code's concatenated-batch loss, gradients too."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 5, (8,))
    method = get_method("regmixup")
    method.seed(4)
    ours = method.loss(model, x, y).total
    method.seed(4)
    mix = method.mix(x, method.alpha)
    z = model(torch.cat([x, mix.inputs]))
    code = mix.lam * F.cross_entropy(z, torch.cat([y, y])) + (1 - mix.lam) * F.cross_entropy(
        z, torch.cat([y, y[mix.perm]])
    )
    assert_close(ours, code)
    params = list(model.parameters())
    for g_ours, g_code in zip(
        torch.autograd.grad(ours, params), torch.autograd.grad(code, params), strict=True
    ):
        assert_close(g_ours, g_code)
