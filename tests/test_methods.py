"""The training methods: hand-computed losses, properties, the Loss contract, gradients and
hyperparameter validation (docs/methods.md). Reference-scale pins: tests/test_mixup.py and
tests/test_entropy_penalty.py."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import calibench
from calibench import CalibenchError, Loss, Method, get_method, list_methods
from calibench.method import TrainingSetup, training_loss
from calibench.plugins import builtin_methods_dir, discover_plugins, load_plugin_file
from calibench.registry import METHODS

BUILTIN_METHODS_DIR = builtin_methods_dir()

discover_plugins()

BUILTIN = [n for n in list_methods() if Path(METHODS.source(n)).parent == BUILTIN_METHODS_DIR]
MIXING = ["mixup", "regmixup", "rankmixup_mrl", "rankmixup_mndcg"]
RANKMIXUP = ["rankmixup_mrl", "rankmixup_mndcg"]
TERMS = {
    "ce": {"ce"},
    "ls": {"ls"},
    "focal": {"focal"},
    "flsd53": {"focal"},
    "mbls": {"ce", "margin"},
    "mixup": {"mixup_ce"},
    "regmixup": {"ce", "mixup_ce"},
    "rankmixup_mrl": {"ce", "rank"},
    "rankmixup_mndcg": {"ce", "rank"},
    "brier": {"brier"},
    "entropy_penalty": {"ce", "entropy"},
    "crl": {"ce", "rank"},
    "camixup": {"mixup_ce", "mixed"},
}
"""The loss terms each built-in method logs (a registered plugin outside this table is held to
the contract only)."""
E = math.e
LOG2_3 = math.log2(3)


def plugin(stem: str) -> ModuleType:
    """A built-in method file, imported the way calibench imports plugins."""
    return load_plugin_file(BUILTIN_METHODS_DIR / f"{stem}.py")


def logits_2x3() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [[2,0,0],[0,1,0]] with labels [0,1]: p_0 = (e^2, 1, 1)/(e^2+2),
    p_1 = (1, e, 1)/(e+2)."""
    return torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64), torch.tensor(
        [0, 1]
    )


def probs_2x3() -> tuple[list[float], list[float]]:
    s0, s1 = E**2 + 2, E + 2
    return [E**2 / s0, 1 / s0, 1 / s0], [1 / s1, E / s1, 1 / s1]


def conf_logits(conf: float, k: int = 3) -> list[float]:
    """Logits whose softmax is (conf, rest split evenly), so the max probability is conf."""
    rest = (1 - conf) / (k - 1)
    return [math.log(conf)] + [math.log(rest)] * (k - 1)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])


def test_builtin_methods_are_all_registered() -> None:
    assert set(BUILTIN) == set(TERMS)


# Hand-computed values


def test_ce_method_by_hand() -> None:
    logits, y = logits_2x3()
    p0, p1 = probs_2x3()
    expected = -(math.log(p0[0]) + math.log(p1[1])) / 2
    out = get_method("ce").loss(nn.Identity(), logits, y)
    assert out.total.item() == pytest.approx(expected, rel=1e-12)
    assert out.terms["ce"].item() == pytest.approx(expected, rel=1e-12)


def test_label_smoothing_by_hand() -> None:
    """alpha = 0.1, K = 3: target (1 - 0.1) onehot + 0.1/3, loss -sum_k t_k log p_k."""
    logits, y = logits_2x3()
    p0, p1 = probs_2x3()
    on, off = 0.9 + 0.1 / 3, 0.1 / 3
    l0 = -(on * math.log(p0[0]) + off * math.log(p0[1]) + off * math.log(p0[2]))
    l1 = -(off * math.log(p1[0]) + on * math.log(p1[1]) + off * math.log(p1[2]))
    expected = (l0 + l1) / 2
    mod = plugin("label_smoothing")
    assert mod.label_smoothing_loss(logits, y, 0.1).item() == pytest.approx(expected, rel=1e-12)
    total = get_method("ls", alpha=0.1).loss(nn.Identity(), logits, y).total
    assert total.item() == pytest.approx(expected, rel=1e-12)


def test_focal_gamma_2_by_hand() -> None:
    logits, y = logits_2x3()
    p0, p1 = probs_2x3()
    expected = -((1 - p0[0]) ** 2 * math.log(p0[0]) + (1 - p1[1]) ** 2 * math.log(p1[1])) / 2
    assert plugin("focal").focal_loss(logits, y, 2.0).item() == pytest.approx(expected, rel=1e-12)
    total = get_method("focal", gamma=2.0).loss(nn.Identity(), logits, y).total
    assert total.item() == pytest.approx(expected, rel=1e-12)


def test_flsd53_by_hand() -> None:
    """Sample 0: logits [0,3,0], y = 0, p_y = 1/(e^3+2) ~ 0.045 < 0.2 -> gamma 5.
    Sample 1: logits [2,0,0], y = 0, p_y = e^2/(e^2+2) ~ 0.787 >= 0.2 -> gamma 3."""
    logits = torch.tensor([[0.0, 3.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    pa, pb = 1 / (E**3 + 2), E**2 / (E**2 + 2)
    assert pa < 0.2 <= pb
    expected = -((1 - pa) ** 5 * math.log(pa) + (1 - pb) ** 3 * math.log(pb)) / 2
    total = get_method("flsd53").loss(nn.Identity(), logits, y).total
    assert total.item() == pytest.approx(expected, rel=1e-12)
    all_three = -((1 - pa) ** 3 * math.log(pa) + (1 - pb) ** 3 * math.log(pb)) / 2
    assert total.item() != pytest.approx(all_three, rel=1e-6)


def test_flsd53_gamma_threshold() -> None:
    gamma = plugin("focal").flsd53_gamma(torch.tensor([0.0, 0.1999, 0.2, 0.25, 1.0]))
    assert gamma.tolist() == [5.0, 5.0, 3.0, 3.0, 3.0]


def test_mbls_margin_penalty_by_hand() -> None:
    """margin 1: distances max - z are [0,2,2] and [1,0,1]; relu(d - 1) = [0,1,1], [0,0,0];
    mean over the 6 entries = 2/6."""
    logits, y = logits_2x3()
    assert plugin("mbls").margin_penalty(logits, 1.0).item() == pytest.approx(1 / 3, rel=1e-12)
    p0, p1 = probs_2x3()
    ce = -(math.log(p0[0]) + math.log(p1[1])) / 2
    out = get_method("mbls", margin=1.0, alpha=0.5).loss(nn.Identity(), logits, y)
    assert out.total.item() == pytest.approx(ce + 0.5 / 3, rel=1e-12)
    assert out.terms["margin"].item() == pytest.approx(1 / 3, rel=1e-12)


def test_mixup_cross_entropy_by_hand() -> None:
    """lam = 0.3: 0.3 * CE(z, y) + 0.7 * CE(z, y_other), each CE a mean over the batch."""
    logits, y = logits_2x3()
    y_other = torch.tensor([1, 2])
    p0, p1 = probs_2x3()
    ce_y = -(math.log(p0[0]) + math.log(p1[1])) / 2
    ce_other = -(math.log(p0[1]) + math.log(p1[2])) / 2
    got = plugin("mixup").mixup_cross_entropy(logits, y, y_other, 0.3)
    assert got.item() == pytest.approx(0.3 * ce_y + 0.7 * ce_other, rel=1e-12)


def test_mrl_by_hand() -> None:
    """Raw max logits [3, 1], mixed max logits [2, 2.5], margin 2:
    hinges relu(2 - 3 + 2) = 1 and relu(2.5 - 1 + 2) = 3.5."""
    mrl_loss = plugin("rankmixup").mrl_loss
    z_raw = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    z_mix = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 2.5]])
    both = mrl_loss(z_raw, z_mix, torch.tensor([True, True]), 2.0)
    assert both.item() == pytest.approx((1 + 3.5) / 2)
    first = mrl_loss(z_raw, z_mix, torch.tensor([True, False]), 2.0)
    assert first.item() == pytest.approx(1 / 2)
    second = mrl_loss(z_raw, z_mix, torch.tensor([0.0, 1.0]), 2.0)
    assert second.item() == pytest.approx(3.5 / 2)


def test_mndcg_by_hand() -> None:
    """B = 1, M = 2. Raw conf 0.75. In mixing order: copy 0 has r = 0.6 and conf 0.8, copy 1 has
    r = 0.9 and conf 0.6. Sorted by relevance the list is raw, copy 1, copy 0:
    r = [1, 0.9, 0.6], c = [0.75, 0.6, 0.8], discounts log2(2), log2(3), log2(4) = 1, log2 3, 2.
    IDCG = 1 + 0.9/log2 3 + 0.6/2, DCG = 0.75 + 0.6/log2 3 + 0.8/2, NDCG = min(DCG/IDCG, IDCG/DCG).
    Sorting by confidence would put copy 0 before copy 1 and give a different value."""
    mndcg_loss = plugin("rankmixup").mndcg_loss
    z_raw = torch.tensor([conf_logits(0.75)], dtype=torch.float64)
    z_mix = torch.tensor([[conf_logits(0.8)], [conf_logits(0.6)]], dtype=torch.float64)
    relevance = torch.tensor([[0.6], [0.9]], dtype=torch.float64)
    idcg = 1 + 0.9 / LOG2_3 + 0.6 / 2
    dcg = 0.75 + 0.6 / LOG2_3 + 0.8 / 2
    expected = 1 - min(dcg / idcg, idcg / dcg)
    got = mndcg_loss(z_raw, z_mix, relevance).item()
    assert got == pytest.approx(expected, rel=1e-6)
    idcg_by_conf = 1 + 0.6 / LOG2_3 + 0.9 / 2
    dcg_by_conf = 0.75 + 0.8 / LOG2_3 + 0.6 / 2
    wrong = 1 - min(dcg_by_conf / idcg_by_conf, idcg_by_conf / dcg_by_conf)
    assert got != pytest.approx(wrong, rel=1e-3)


def test_mixing_relevance() -> None:
    relevance = plugin("rankmixup").mixing_relevance
    rel = relevance(0.3, torch.tensor([0, 1, 2]), torch.tensor([0, 2, 1]))
    assert_close(rel, torch.tensor([1.0, 0.7, 0.7]))
    rel = relevance(0.8, torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert_close(rel, torch.tensor([0.8, 1.0]))


def test_brier_by_hand() -> None:
    logits, y = logits_2x3()
    p0, p1 = probs_2x3()
    s0 = (p0[0] - 1) ** 2 + p0[1] ** 2 + p0[2] ** 2
    s1 = p1[0] ** 2 + (p1[1] - 1) ** 2 + p1[2] ** 2
    assert plugin("brier").brier_loss(logits, y).item() == pytest.approx((s0 + s1) / 2, rel=1e-12)
    total = get_method("brier").loss(nn.Identity(), logits, y).total
    assert total.item() == pytest.approx((s0 + s1) / 2, rel=1e-12)


def test_entropy_by_hand() -> None:
    logits, y = logits_2x3()
    p0, p1 = probs_2x3()
    h0 = -sum(p * math.log(p) for p in p0)
    h1 = -sum(p * math.log(p) for p in p1)
    entropy = plugin("entropy_penalty").mean_entropy(logits)
    assert entropy.item() == pytest.approx((h0 + h1) / 2, rel=1e-12)
    ce = -(math.log(p0[0]) + math.log(p1[1])) / 2
    per_sample = get_method("entropy_penalty", beta=0.2, reduction="class_sum")
    total = per_sample.loss(nn.Identity(), logits, y).total
    assert total.item() == pytest.approx(ce - 0.2 * (h0 + h1) / 2, rel=1e-12)
    total = get_method("entropy_penalty", beta=0.2).loss(nn.Identity(), logits, y).total
    assert total.item() == pytest.approx(ce - 0.2 * (h0 + h1) / 2 / 3, rel=1e-12)


# Properties


def test_mrl_zero_when_raw_beats_mixed_by_margin() -> None:
    mrl_loss = plugin("rankmixup").mrl_loss
    torch.manual_seed(2)
    z_mix = torch.randn(4, 5)
    mask = torch.ones(4, dtype=torch.bool)
    assert mrl_loss(z_mix + 2.1, z_mix, mask, 2.0).item() == 0.0
    z_raw = z_mix + 2.1
    z_raw[0] -= 0.2
    assert mrl_loss(z_raw, z_mix, mask, 2.0).item() == pytest.approx(0.1 / 4, rel=1e-4)


def test_mrl_mask_is_per_sample_over_all_b() -> None:
    """Hinges [a, b] = [0.5, 4.5] with mask [1, 0]: a/2 = 0.25, not
    mean(mask) * mean(hinge) = 0.5 * 2.5 = 1.25."""
    mrl_loss = plugin("rankmixup").mrl_loss
    z_raw = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_mix = torch.tensor([[0.5, 0.0], [0.0, 4.5]])
    got = mrl_loss(z_raw, z_mix, torch.tensor([True, False]), 1.0)
    assert got.item() == pytest.approx(0.25)
    assert mrl_loss(z_raw, z_mix, torch.tensor([False, False]), 1.0).item() == 0.0


def test_mrl_prob_confidence_uses_softmax_maxima() -> None:
    mrl_loss = plugin("rankmixup").mrl_loss
    torch.manual_seed(3)
    z_raw, z_mix = torch.randn(6, 4) * 2, torch.randn(6, 4) * 2
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    c_raw = F.softmax(z_raw, dim=1).max(dim=1).values
    c_mix = F.softmax(z_mix, dim=1).max(dim=1).values
    expected = (mask.float() * F.relu(c_mix - c_raw + 0.1)).sum() / 6
    got = mrl_loss(z_raw, z_mix, mask, 0.1, confidence="prob")
    assert_close(got, expected)
    assert not torch.isclose(got, mrl_loss(z_raw, z_mix, mask, 0.1, confidence="logit"))


def test_ndcg_is_one_when_confidences_equal_relevances() -> None:
    """Raw item relevance 1 needs conf 1: logits [60, 0, 0] give softmax max 1.0 in float64."""
    mndcg_loss = plugin("rankmixup").mndcg_loss
    certain = [60.0, 0.0, 0.0]
    z_raw = torch.tensor([certain, certain], dtype=torch.float64)
    z_mix = torch.tensor(
        [[conf_logits(0.7), certain], [certain, conf_logits(0.55)], [conf_logits(0.9), certain]],
        dtype=torch.float64,
    )
    relevance = torch.tensor([[0.7, 1.0], [1.0, 0.55], [0.9, 1.0]], dtype=torch.float64)
    assert mndcg_loss(z_raw, z_mix, relevance).item() == pytest.approx(0.0, abs=1e-12)
    assert mndcg_loss(z_raw, z_mix.flip(2), relevance).item() == pytest.approx(0.0, abs=1e-12)
    relevance[0, 0] = 0.6
    assert mndcg_loss(z_raw, z_mix, relevance).item() > 1e-4


def test_ndcg_penalises_over_and_under_confidence_alike() -> None:
    """B = 1, M = 1, r = 0.5: IDCG = 1 + 0.5/log2 3. Over: c = 0.9 * [1, 0.5], DCG = 0.9 IDCG.
    Under: c_raw = 0.95, c_mix = (IDCG/0.9 - 0.95) log2 3, DCG = IDCG/0.9. Both lose 1 - 0.9."""
    mndcg_loss = plugin("rankmixup").mndcg_loss
    relevance = torch.tensor([[0.5]], dtype=torch.float64)
    idcg = 1 + 0.5 / LOG2_3
    under_mix = (idcg / 0.9 - 0.95) * LOG2_3
    assert 1 / 3 < under_mix < 1

    def loss(c_raw: float, c_mix: float) -> float:
        z_raw = torch.tensor([conf_logits(c_raw)], dtype=torch.float64)
        z_mix = torch.tensor([[conf_logits(c_mix)]], dtype=torch.float64)
        return mndcg_loss(z_raw, z_mix, relevance).item()

    over, under = loss(0.9, 0.45), loss(0.95, under_mix)
    assert over == pytest.approx(0.1, rel=1e-6)
    assert under == pytest.approx(0.1, rel=1e-6)


def test_mndcg_invariant_to_order_of_mixed_copies() -> None:
    mndcg_loss = plugin("rankmixup").mndcg_loss
    torch.manual_seed(4)
    z_raw, z_mix = torch.randn(5, 4), torch.randn(3, 5, 4)
    relevance = 0.5 + 0.5 * torch.rand(3, 5)
    base = mndcg_loss(z_raw, z_mix, relevance)
    for perm in ([2, 0, 1], [1, 0, 2], [2, 1, 0]):
        assert_close(mndcg_loss(z_raw, z_mix[perm], relevance[perm]), base)
    assert not torch.isclose(mndcg_loss(z_raw, z_mix[[2, 0, 1]], relevance), base)


def test_ls_alpha_zero_is_ce() -> None:
    torch.manual_seed(5)
    logits, y = torch.randn(7, 4), torch.randint(0, 4, (7,))
    got = plugin("label_smoothing").label_smoothing_loss(logits, y, 0.0)
    assert_close(got, F.cross_entropy(logits, y))
    assert not torch.isclose(
        plugin("label_smoothing").label_smoothing_loss(logits, y, 0.1), F.cross_entropy(logits, y)
    )


def test_focal_gamma_zero_is_ce() -> None:
    torch.manual_seed(6)
    logits, y = torch.randn(7, 4), torch.randint(0, 4, (7,))
    assert_close(plugin("focal").focal_loss(logits, y, 0.0), F.cross_entropy(logits, y))
    total = get_method("focal", gamma=0.0).loss(nn.Identity(), logits, y).total
    assert_close(total, F.cross_entropy(logits, y))


def test_flsd53_picks_gamma_per_sample() -> None:
    focal = plugin("focal")
    torch.manual_seed(7)
    logits, y = torch.randn(12, 4, dtype=torch.float64) * 3, torch.randint(0, 4, (12,))
    p_y = F.softmax(logits, dim=1)[torch.arange(12), y]
    assert (p_y < 0.2).any() and (p_y >= 0.2).any()
    per_sample = [
        focal.focal_loss(logits[i : i + 1], y[i : i + 1], 5.0 if p_y[i] < 0.2 else 3.0)
        for i in range(12)
    ]
    expected = torch.stack(per_sample).mean()
    assert_close(get_method("flsd53").loss(nn.Identity(), logits, y).total, expected)
    assert_close(focal.focal_loss(logits, y, focal.flsd53_gamma(p_y)), expected)


def test_flsd53_gamma_is_detached() -> None:
    p = torch.tensor([0.1, 0.5], requires_grad=True)
    gamma = plugin("focal").flsd53_gamma(p)
    assert not gamma.requires_grad
    assert gamma.grad_fn is None
    (grad,) = torch.autograd.grad((gamma * p).sum(), p)
    assert_close(grad, torch.tensor([5.0, 3.0]))


def test_mbls_huge_margin_is_ce() -> None:
    torch.manual_seed(8)
    logits, y = torch.randn(7, 4) * 5, torch.randint(0, 4, (7,))
    out = get_method("mbls", margin=1e6).loss(nn.Identity(), logits, y)
    assert_close(out.total, F.cross_entropy(logits, y))
    assert out.terms["margin"].item() == 0.0
    small = get_method("mbls", margin=0.5).loss(nn.Identity(), logits, y)
    assert small.total.item() > F.cross_entropy(logits, y).item()


def test_mixup_tiny_alpha_approaches_ce() -> None:
    """Beta(1e-3, 1e-3) usually puts l within 1e-6 of 0 or 1 (about 1.4% of draws land
    further in), so x' is x or x[perm] and the loss is the CE of x' on its dominant label, which
    for a mean over a permuted batch is also CE(model(x), y)."""
    model, (x, y) = tiny_model(), tiny_batch()
    ce = F.cross_entropy(model(x), y)
    method = get_method("mixup", alpha=1e-3)
    checked = 0
    for seed in range(20):
        method.seed(seed)
        mix = method.mix(x, 1e-3)
        if min(mix.lam, 1 - mix.lam) >= 1e-6:
            continue
        dominant = y if mix.lam > 0.5 else y[mix.perm]
        method.seed(seed)
        total = method.loss(model, x, y).total
        assert_close(total, F.cross_entropy(model(mix.inputs), dominant), rtol=1e-4, atol=1e-5)
        assert_close(total, ce, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 15


def test_mixup_method_uses_its_mix() -> None:
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method("mixup", alpha=0.4)
    method.seed(9)
    total = method.loss(model, x, y).total
    method.seed(9)
    mix = method.mix(x, 0.4)
    expected = plugin("mixup").mixup_cross_entropy(model(mix.inputs), y, y[mix.perm], mix.lam)
    assert_close(total, expected)


@pytest.mark.parametrize(("reduction", "scale"), [("batch_mean", 0.5), ("sum", 1.0)])
def test_regmixup_total_is_ce_plus_eta_mixup_ce(reduction: str, scale: float) -> None:
    """Default "batch_mean": (CE + eta * mixup CE) / 2; "sum": CE + eta * mixup CE."""
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method("regmixup", alpha=10.0, eta=0.5, reduction=reduction)
    method.seed(10)
    out = method.loss(model, x, y)
    method.seed(10)
    mix = method.mix(x, 10.0)
    mixed = plugin("mixup").mixup_cross_entropy(model(mix.inputs), y, y[mix.perm], mix.lam)
    assert_close(out.terms["ce"], F.cross_entropy(model(x), y))
    assert_close(out.terms["mixup_ce"], mixed)
    assert_close(out.total, scale * (out.terms["ce"] + 0.5 * out.terms["mixup_ce"]))


# Methods through .loss(model, x, y)


def one_epoch_then_loss(
    method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int
) -> Loss:
    """The trainer's sequence on a fresh state: seed, setup, one step, the epoch-end hook with
    confident but wrong validation logits (every class over-confident), then the measured step.
    A method that ignores the optional hooks computes its loss twice from its stream."""
    indices = torch.arange(len(y))
    k = 3
    method.seed(seed)
    method.setup(TrainingSetup(num_train=len(y), num_classes=k))
    training_loss(method, model, x, y, indices)
    val_labels = np.arange(12) % k
    val_logits = 5.0 * np.eye(k, dtype=np.float32)[(val_labels + 1) % k]
    method.on_epoch_end(1, val_logits, val_labels)
    return training_loss(method, model, x, y, indices)


@pytest.mark.parametrize("name", list_methods())
def test_loss_contract(name: str) -> None:
    model, (x, y) = tiny_model(), tiny_batch()
    out = one_epoch_then_loss(get_method(name), model, x, y, seed=0)
    assert isinstance(out, Loss)
    assert out.total.shape == ()
    assert torch.isfinite(out.total)
    assert out.total.requires_grad
    assert TERMS.get(name, set()) <= set(out.terms)


@pytest.mark.parametrize("name", RANKMIXUP)
def test_rankmixup_total_is_ce_plus_weighted_rank(name: str) -> None:
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method(name, weight=0.3)
    method.seed(11)
    out = method.loss(model, x, y)
    assert out.terms["rank"].item() > 0
    assert_close(out.total, out.terms["ce"] + 0.3 * out.terms["rank"])
    assert_close(out.terms["ce"], F.cross_entropy(model(x), y))


def test_rankmixup_mrl_method_wiring() -> None:
    """The rank term is mrl_loss of the raw and mixed logits with mask y != y[perm]."""
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method("rankmixup_mrl", alpha=1.0, margin=1.5, confidence="prob")
    method.seed(12)
    rank = method.loss(model, x, y).terms["rank"]
    method.seed(12)
    mix = method.mix(x, 1.0)
    expected = plugin("rankmixup").mrl_loss(
        model(x), model(mix.inputs), y != y[mix.perm], 1.5, confidence="prob"
    )
    assert_close(rank, expected)


def test_rankmixup_mndcg_method_wiring() -> None:
    """The rank term is mndcg_loss over M copies, each with its own l_q and permutation."""
    mod = plugin("rankmixup")
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method("rankmixup_mndcg", alpha=1.0, num_mixup=4)
    method.seed(13)
    rank = method.loss(model, x, y).terms["rank"]
    method.seed(13)
    mixes = [method.mix(x, 1.0) for _ in range(4)]
    assert len({m.lam for m in mixes}) == 4
    z_mix = torch.stack([model(m.inputs) for m in mixes])
    relevance = torch.stack([mod.mixing_relevance(m.lam, y, y[m.perm]) for m in mixes])
    assert_close(rank, mod.mndcg_loss(model(x), z_mix, relevance))


@pytest.mark.parametrize("name", MIXING)
def test_mixing_is_reproducible_from_the_seed(name: str) -> None:
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method(name)
    totals = []
    for seed in (21, 21, 22):
        method.seed(seed)
        totals.append(method.loss(model, x, y).total.detach())
    assert torch.equal(totals[0], totals[1])
    assert not torch.isclose(totals[0], totals[2])


@pytest.mark.parametrize(
    ("name", "hp", "mixed_rows"),
    [
        ("rankmixup_mrl", {}, 6),
        ("rankmixup_mndcg", {"num_mixup": 1}, 6),
        ("rankmixup_mndcg", {"num_mixup": 3}, 18),
        ("rankmixup_mndcg", {"num_mixup": 5}, 30),
    ],
)
def test_rankmixup_forward_calls(name: str, hp: dict, mixed_rows: int) -> None:
    model, (x, y) = tiny_model(), tiny_batch()
    calls: list[int] = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    method = get_method(name, **hp)
    method.seed(0)
    method.loss(model, x, y)
    assert calls == [6, mixed_rows]


# Gradients


def _terms(out: Loss) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in out.terms.items() if isinstance(v, torch.Tensor)}
    return {"total": out.total, **tensors}


@pytest.mark.parametrize("name", list_methods())
def test_gradients_match_finite_differences(name: str) -> None:
    """Autograd gradient of the total and of every differentiable term w.r.t. all 15 parameters
    of a float64 Linear(4, 3) against central differences; each evaluation starts from the same
    fresh state and seed (:func:`one_epoch_then_loss`), so every evaluation mixes alike."""
    torch.manual_seed(14)
    model = nn.Linear(4, 3).double()
    x, y = torch.randn(5, 4, dtype=torch.float64) * 2, torch.tensor([0, 1, 2, 0, 1])
    hp = {"mbls": {"margin": 0.05}}.get(name, {})
    method = get_method(name, **hp)
    params = list(model.parameters())

    terms = _terms(one_epoch_then_loss(method, model, x, y, seed=3))
    terms = {k: v for k, v in terms.items() if v.requires_grad}
    autograd = {
        k: torch.cat([g.flatten() for g in torch.autograd.grad(v, params, retain_graph=True)])
        for k, v in terms.items()
    }

    h = 1e-6
    numeric: dict[str, list[float]] = {k: [] for k in terms}
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                values = []
                for step in (h, -2 * h):
                    flat[i] += step
                    values.append(_terms(one_epoch_then_loss(method, model, x, y, seed=3)))
                flat[i] += h
                for k in terms:
                    numeric[k].append((values[0][k].item() - values[1][k].item()) / (2 * h))

    for k in terms:
        assert autograd[k].abs().max() > 1e-6, f"{name}: no gradient through {k}"
        assert_close(
            autograd[k],
            torch.tensor(numeric[k], dtype=torch.float64),
            rtol=1e-5,
            atol=1e-7,
            msg=f"{name}: {k}",
        )


@pytest.mark.parametrize("name", RANKMIXUP)
def test_rank_term_alone_has_gradient(name: str) -> None:
    model, (x, y) = tiny_model(), tiny_batch()
    method = get_method(name)
    method.seed(16)
    rank = method.loss(model, x, y).terms["rank"]
    assert rank.item() > 0
    grads = torch.autograd.grad(rank, list(model.parameters()))
    assert sum(g.abs().sum() for g in grads) > 1e-6


# Validation


@pytest.mark.parametrize(
    ("name", "hp", "param"),
    [
        ("mbls", {"margin": -1.0}, "margin"),
        ("rankmixup_mrl", {"margin": -0.5}, "margin"),
        ("mixup", {"alpha": 0.0}, "alpha"),
        ("mixup", {"alpha": -1.0}, "alpha"),
        ("regmixup", {"alpha": 0.0}, "alpha"),
        ("regmixup", {"reduction": "mean"}, "reduction"),
        ("entropy_penalty", {"reduction": "sum"}, "reduction"),
        ("entropy_penalty", {"beta": -0.1}, "beta"),
        ("rankmixup_mrl", {"alpha": 0.0}, "alpha"),
        ("rankmixup_mndcg", {"alpha": -2.0}, "alpha"),
        ("rankmixup_mndcg", {"num_mixup": 0}, "num_mixup"),
        ("rankmixup_mndcg", {"num_mixup": 1.5}, "num_mixup"),
        ("rankmixup_mndcg", {"num_mixup": "3"}, "num_mixup"),
        ("rankmixup_mrl", {"confidence": "bogus"}, "confidence"),
        ("mbls", {"margin": "10"}, "margin"),
        ("ls", {"alpha": 1.0}, "alpha"),
        ("focal", {"gamma": -0.5}, "gamma"),
        ("regmixup", {"eta": -1.0}, "eta"),
        ("crl", {"weight": -1.0}, "weight"),
        ("camixup", {"alpha": 0.0}, "alpha"),
        ("rankmixup_mndcg", {"num_mixup": 65}, "num_mixup"),
        ("rankmixup_mndcg", {"weight": float("nan")}, "weight"),
    ],
)
def test_invalid_hyperparameters_raise(name: str, hp: dict, param: str) -> None:
    with pytest.raises(CalibenchError, match=rf"\b{param}\b"):
        get_method(name, **hp)


def test_range_messages_name_the_setting_the_rule_and_the_value() -> None:
    with pytest.raises(CalibenchError) as info:
        get_method("ls", alpha=1)
    assert str(info.value) == (
        "method ls: alpha must be in [0, 1) (1 is the uniform target), got 1.0."
    )
    with pytest.raises(CalibenchError) as info:
        get_method("mbls", margin=-1, alpha=-2.5)
    assert str(info.value) == (
        "method mbls: margin must be >= 0, got -1.0; alpha must be >= 0, got -2.5."
    )


def test_methods_built_directly_check_their_ranges() -> None:
    """The annotations hold for a method built without get_method, as a plugin's test might."""
    with pytest.raises(CalibenchError, match=r"method focal: gamma must be >= 0, got -1"):
        METHODS.get("focal")(gamma=-1.0)
    with pytest.raises(CalibenchError, match=r"num_mixup must be in \[1, 64\], got 0"):
        METHODS.get("rankmixup_mndcg")(num_mixup=0)


@pytest.mark.parametrize("name", list_methods())
def test_defaults_obey_their_annotations(name: str) -> None:
    method = get_method(name)
    assert get_method(name, **method.hyperparameters()) == method


def test_valid_edge_hyperparameters_are_accepted() -> None:
    assert get_method("mbls", margin=0).margin == 0.0
    assert get_method("rankmixup_mndcg", num_mixup=1).num_mixup == 1
    assert get_method("rankmixup_mrl", confidence="prob").confidence == "prob"
    assert get_method("rankmixup_mndcg", num_mixup=64).num_mixup == 64
    assert get_method("ls", alpha=0).alpha == 0.0
    assert get_method("focal", gamma=0).gamma == 0.0


@pytest.mark.parametrize(
    ("name", "bad", "valid"),
    [
        ("rankmixup_mndcg", "num_mixups", ["alpha", "num_mixup", "weight"]),
        ("mbls", "lam", ["margin", "alpha"]),
        ("ce", "alpha", []),
    ],
)
def test_unknown_hyperparameter_lists_valid_ones(name: str, bad: str, valid: list[str]) -> None:
    with pytest.raises(CalibenchError) as info:
        get_method(name, **{bad: 1})
    message = str(info.value)
    assert bad in message
    for field in valid:
        assert field in message


def test_calibench_error_is_exported() -> None:
    assert calibench.CalibenchError is CalibenchError
