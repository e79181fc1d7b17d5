"""Losses at the reference code's scale (docs/methods.md): RegMixup's concatenated-batch mean and
the entropy penalty's mean over B * K entries, each pinned by hand for the default and the
alternative form, and the paper presets' hyperparameters with their sources."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from calibench import get_method
from calibench.config import DEFAULT_CONFIG, load_config
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


# Paper presets: every hyperparameter is written out with its source.

PAPER_PRESETS = ["paper-cifar10", "paper-cifar100", "paper-tiny"]


def paper_hparam_lines() -> dict[str, list[str]]:
    """The key = value lines of each [presets.paper-*.hparams.<method>] table."""
    tables: dict[str, list[str]] = {}
    current = None
    for line in DEFAULT_CONFIG.read_text().splitlines():
        header = re.match(r"\[(.+)\]", line)
        if header:
            name = header.group(1)
            current = name if re.match(r"presets\.paper-[\w-]+\.hparams\.\w+$", name) else None
            if current:
                tables[current] = []
        elif current and "=" in line and not line.lstrip().startswith("#"):
            tables[current].append(line)
    return tables


def test_every_paper_preset_hyperparameter_cites_its_source() -> None:
    tables = paper_hparam_lines()
    assert {t.split(".")[1] for t in tables} == set(PAPER_PRESETS)
    for table, lines in tables.items():
        assert lines, table
        for line in lines:
            source = line.split("#", 1)[1] if "#" in line else ""
            pattern = r"RankMixup|MbLS|mixup-cifar10|Mukhoti|RegMixup|confidence-aware|CAMixup"
            assert re.search(pattern, source), (table, line)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_set_every_hyperparameter_of_their_methods(preset: str) -> None:
    """Each method with hyperparameters has all of them in the preset, each a valid value; LS and
    MbLS carry the MbLS paper's values (0.05; margin 10, alpha 0.1), not the RankMixup
    repository's configs (0.2; margin 6); CAMixup's alpha lies in (0, 1), where the authors' code
    mixes."""
    config = load_config(DEFAULT_CONFIG)["presets"][preset]
    hparams = config["hparams"]
    for method in config["methods"]:
        fields = set(get_method(method).hyperparameters())
        assert set(hparams.get(method, {})) == fields, method
        get_method(method, **hparams.get(method, {}))
    assert hparams["ls"]["alpha"] == 0.05
    assert (hparams["mbls"]["margin"], hparams["mbls"]["alpha"]) == (10.0, 0.1)
    assert 0 < hparams["camixup"]["alpha"] < 1
