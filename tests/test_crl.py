"""CRL (methods/crl.py, docs/stateful-methods.md): the correctness ranking loss by hand, against
the paper's formula and the authors' formulation, the correctness history the authors keep,
gradients, and its state in a weights-only checkpoint."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from calibench import Method, get_method
from calibench.method import TrainingSetup
from calibench.plugins import builtin_methods_dir, load_plugin_file

CRL = load_plugin_file(builtin_methods_dir() / "crl.py")


def conf_logits(confs: list[float], winners: list[int], k: int = 3) -> torch.Tensor:
    """Rows of log-probabilities whose softmax puts ``conf`` on class ``winner`` and splits the
    rest evenly, so each row's max probability is exactly its ``conf`` (conf > 1/k)."""
    rows = []
    for conf, winner in zip(confs, winners, strict=True):
        row = [math.log((1 - conf) / (k - 1))] * k
        row[winner] = math.log(conf)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def crl_with_history(counts: list[int], epochs_done: int, weight: float = 1.0) -> Method:
    method = get_method("crl", weight=weight)
    method.setup(TrainingSetup(num_train=len(counts), num_classes=3))
    method.load_state_dict({"correct_counts": torch.tensor(counts), "epochs_done": epochs_done})
    return method


def weights_only_round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# CRL: the loss


def test_crl_loss_by_hand() -> None:
    """Counts (4, 2, 2, 0) after 4 epochs normalise to c = (1, .5, .5, 0). The batch holds
    samples 0, 1, 2 with confidences .9, .6, .7 and pairs (0,1), (1,2), (2,0):
    max(0, -(.9-.6) + .5) = .2; c equal -> 0; max(0, +(.7-.9) + .5) = .3; mean = 1/6."""
    method = crl_with_history([4, 2, 2, 0], epochs_done=4, weight=0.5)
    logits = conf_logits([0.9, 0.6, 0.7], [0, 1, 0]).requires_grad_()
    y = torch.tensor([0, 2, 0])
    out = method.loss(lambda x: logits, torch.zeros(3, 1), y, torch.tensor([0, 1, 2]))
    assert_close(out.terms["rank"], torch.tensor(1 / 6, dtype=torch.float64))
    ce = -(math.log(0.9) + math.log(0.2) + math.log(0.7)) / 3
    assert_close(out.terms["ce"], torch.tensor(ce, dtype=torch.float64))
    assert_close(out.total, out.terms["ce"] + 0.5 * out.terms["rank"])


def paper_crl(conf: list[float], c: list[float]) -> float:
    """The paper's L_CR with g(c_i, c_j) = 1, 0, -1, over the pairs (i, i + 1 mod B)."""
    total = 0.0
    for i in range(len(conf)):
        j = (i + 1) % len(conf)
        g = 1.0 if c[i] > c[j] else 0.0 if c[i] == c[j] else -1.0
        total += max(0.0, -g * (conf[i] - conf[j]) + abs(c[i] - c[j]))
    return total / len(conf)


def code_style_crl(conf: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The authors' formulation: a margin ranking loss (margin 0) on k_i against k_j shifted by
    |c_i - c_j| / target, with target sign(c_i - c_j) and zero targets replaced by one."""
    conf2, c2 = conf.roll(-1), c.roll(-1)
    target = torch.sign(c - c2)
    shift = (c - c2).abs() / torch.where(target == 0, torch.ones_like(target), target)
    return nn.MarginRankingLoss(margin=0.0)(conf, conf2 + shift, target)


@pytest.mark.parametrize("seed", range(5))
def test_crl_loss_equals_paper_formula_and_code_formulation(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    conf = torch.rand(16, generator=gen, dtype=torch.float64)
    c = torch.randint(0, 5, (16,), generator=gen).double() / 4
    ours = CRL.correctness_ranking_loss(conf, conf.roll(-1), c, c.roll(-1))
    assert ours.item() == pytest.approx(paper_crl(conf.tolist(), c.tolist()), abs=1e-12)
    assert_close(ours, code_style_crl(conf, c))


@pytest.mark.parametrize(
    ("counts", "epochs_done", "expected"),
    [
        ([3, 1, 2, 1], 3, [1.0, 0.0, 0.5, 0.0]),
        ([0, 1, 0], 0, [0.0, 1.0, 0.0]),
        ([2, 3, 2], 2, [0.0, 1.0, 0.0]),
        ([1, 3, 2], 2, [0.0, 2.0, 1.0]),
    ],
)
def test_normalised_correctness(counts, epochs_done, expected) -> None:
    """(C - min C) / max(E - min C, 1), E = max(epochs_done, 1): a sample counted in the current
    epoch may exceed 1, and the degenerate span (min C = E) becomes 1."""
    c = CRL.normalised_correctness(torch.tensor(counts), epochs_done)
    assert c.tolist() == expected


def test_crl_history_is_updated_by_index_after_the_loss() -> None:
    method = get_method("crl")
    method.setup(TrainingSetup(num_train=6, num_classes=3))
    predicts_0 = conf_logits([0.8, 0.8, 0.8], [0, 0, 0]).requires_grad_()
    out = method.loss(
        lambda x: predicts_0, torch.zeros(3, 1), torch.tensor([0, 1, 0]), torch.tensor([4, 1, 3])
    )
    assert out.terms["rank"].item() == 0.0
    assert method.state_dict()["correct_counts"].tolist() == [0, 0, 0, 1, 1, 0]
    two = predicts_0[:2]
    method.loss(lambda x: two, torch.zeros(2, 1), torch.tensor([0, 0]), torch.tensor([1, 5]))
    assert method.state_dict()["correct_counts"].tolist() == [0, 1, 0, 1, 1, 1]
    method.on_epoch_end(1, np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    assert method.state_dict()["epochs_done"] == 1


def test_crl_history_matches_the_authors_bookkeeping() -> None:
    """Three epochs of shuffled batches with random correctness: at every step the rank term
    equals L_CR on targets from an independent re-implementation of the authors' history
    (counts; max-correctness 1, then +1 at the end of every epoch after the first; min-max
    normalisation before the batch's own update)."""
    rng = np.random.default_rng(0)
    n, batch = 12, 4
    method = get_method("crl")
    method.setup(TrainingSetup(num_train=n, num_classes=3))
    counts, max_correctness = np.zeros(n), 1
    checked = 0
    for epoch in range(1, 4):
        for idx in rng.permutation(n).reshape(-1, batch):
            correct = rng.random(batch) < 0.6
            confs = rng.uniform(0.4, 0.95, batch)
            y = torch.tensor(np.where(correct, 0, 1))
            logits = conf_logits(confs.tolist(), [0] * batch).requires_grad_()
            low = counts.min()
            if max_correctness - low > 0:
                c = (counts[idx] - low) / (max_correctness - low)
                expected = paper_crl(confs.tolist(), c.tolist())
                checked += 1
            out = method.loss(lambda x, z=logits: z, torch.zeros(batch, 1), y, torch.tensor(idx))
            if max_correctness - low > 0:
                assert out.terms["rank"].item() == pytest.approx(expected, abs=1e-12)
            counts[idx] += correct
        if epoch > 1:
            max_correctness += 1
        method.on_epoch_end(epoch, np.zeros((1, 3), np.float32), np.zeros(1, np.int64))
    assert checked >= 8
    assert method.state_dict()["correct_counts"].tolist() == counts.astype(int).tolist()


def test_crl_gradients_match_finite_differences() -> None:
    torch.manual_seed(14)
    model = nn.Linear(4, 3).double()
    x, y = torch.randn(6, 4, dtype=torch.float64) * 2, torch.tensor([0, 1, 2, 0, 1, 2])
    method = crl_with_history([3, 0, 1, 2, 3, 1, 9], epochs_done=3)
    indices = torch.tensor([0, 1, 2, 3, 4, 5])
    start = method.state_dict()
    params = list(model.parameters())
    out = method.loss(model, x, y, indices)
    assert out.terms["rank"].item() > 0
    grads = {
        k: torch.cat([g.flatten() for g in torch.autograd.grad(v, params, retain_graph=True)])
        for k, v in {"total": out.total, "rank": out.terms["rank"]}.items()
    }
    h, numeric = 1e-6, {"total": [], "rank": []}
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                values = []
                for step in (h, -2 * h):
                    flat[i] += step
                    method.load_state_dict(start)
                    o = method.loss(model, x, y, indices)
                    values.append({"total": o.total.item(), "rank": o.terms["rank"].item()})
                flat[i] += h
                for k in numeric:
                    numeric[k].append((values[0][k] - values[1][k]) / (2 * h))
    for k in numeric:
        assert grads[k].abs().max() > 1e-6
        assert_close(grads[k], torch.tensor(numeric[k], dtype=torch.float64), rtol=1e-5, atol=1e-7)


def test_crl_state_round_trips_weights_only() -> None:
    method = crl_with_history([3, 0, 1, 2], epochs_done=3)
    state = weights_only_round_trip(method.state_dict())
    other = get_method("crl")
    other.setup(TrainingSetup(num_train=4, num_classes=3))
    other.load_state_dict(state)
    assert torch.equal(other.state_dict()["correct_counts"], torch.tensor([3, 0, 1, 2]))
    assert other.state_dict()["epochs_done"] == 3
