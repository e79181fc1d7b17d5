"""CAMixup (methods/camixup.py, docs/stateful-methods.md): the per-class decision by hand and
against a direct loop, and the mix of marked classes only, from the first epoch's end."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from calibench import get_method
from calibench.method import TrainingSetup
from calibench.plugins import builtin_methods_dir, load_plugin_file

CAMIXUP = load_plugin_file(builtin_methods_dir() / "camixup.py")


def weights_only_round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# CAMixup: the per-class decision and the mix


def test_camixup_class_decision_by_hand() -> None:
    """Class 0: confidences .9 (right), .8 (wrong): acc .5 < conf .85 -> mixed.
    Class 1: .6 and .7, both right: acc 1 > conf .65 -> not mixed.
    Class 2: no validation sample -> mixed (the authors' NaN comparison).
    Class 3: one sample, right with probability 1: acc 1 = conf 1 -> mixed (not strictly under).
    Class 4: .5 right, .5 wrong, .95 wrong: acc 1/3 < conf .65 -> mixed.
    Class 5: .3 right: acc 1 > .3 -> not mixed."""
    k = 6
    rows = [(0.9, 0, 0), (0.8, 1, 0), (0.6, 1, 1), (0.7, 1, 1), (0.5, 4, 4), (0.5, 0, 4)]
    rows += [(0.95, 1, 4), (0.3, 5, 5)]
    logits = []
    for conf, winner, _ in rows:
        rest = (1 - conf) / (k - 1)
        row = np.full(k, np.log(rest))
        row[winner] = np.log(conf)
        logits.append(row)
    certain = np.full(k, -1000.0)
    certain[3] = 0.0
    logits.append(certain)
    labels = np.array([label for *_, label in rows] + [3])
    marked = CAMIXUP.overconfident_classes(np.array(logits, np.float32), labels, k)
    assert marked.tolist() == [True, False, True, True, True, False]


def test_camixup_decision_agrees_with_a_direct_loop() -> None:
    """Classes 0-2: weak logits with a bump on the true class (right but unsure: not mixed);
    classes 3-5: large random logits (unsure of nothing, often wrong: mixed); class 6: absent."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 300)
    logits = np.where((labels < 3)[:, None], 0.1, 3.0) * rng.normal(size=(300, 7))
    logits[np.arange(300), labels] += np.where(labels < 3, 0.5, 0.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = []
    for k in range(7):
        rows = labels == k
        if not rows.any():
            expected.append(True)
            continue
        acc = np.mean(probs[rows].argmax(1) == k)
        expected.append(not acc > probs[rows].max(1).mean())
    assert expected == [False, False, False, True, True, True, True]
    assert CAMIXUP.overconfident_classes(logits, labels, 7).tolist() == expected


def recording_model(seen: list[torch.Tensor]):
    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x * 1.0

    return model


def test_camixup_mixes_only_samples_of_marked_classes() -> None:
    """Class 0 is marked. Sample 0 (class 0) is mixed with its mirror, sample 3 (class 2);
    sample 3 itself is not mixed although its partner's class is marked; sample 2 (class 0)
    is mixed with sample 1. Weights are max(u, 1 - u), u ~ Beta(alpha, alpha) per sample."""
    method = get_method("camixup", alpha=0.4)
    method.setup(TrainingSetup(num_train=10, num_classes=3))
    method.load_state_dict({"mix_classes": torch.tensor([True, False, False])})
    x = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2])
    seen: list[torch.Tensor] = []
    method.seed(5)
    out = method.loss(recording_model(seen), x, y)
    u = np.random.default_rng(5).beta(0.4, 0.4, size=4)
    lam = torch.tensor(np.maximum(u, 1 - u))
    inputs = seen[0]
    assert torch.equal(inputs[1], x[1]) and torch.equal(inputs[3], x[3])
    assert_close(inputs[0], lam[0] * x[0] + (1 - lam[0]) * x[3])
    assert_close(inputs[2], lam[2] * x[2] + (1 - lam[2]) * x[1])
    assert (lam >= 0.5).all()
    w = torch.tensor([lam[0], 1.0, lam[2], 1.0], dtype=torch.float64)
    own = F.cross_entropy(inputs, y, reduction="none")
    other = F.cross_entropy(inputs, y.flip(0), reduction="none")
    assert_close(out.total, (w * own + (1 - w) * other).mean())
    assert out.terms["mixed"].item() == 0.5


def test_camixup_mixes_nothing_before_the_first_epoch_end() -> None:
    method = get_method("camixup")
    method.setup(TrainingSetup(num_train=10, num_classes=3))
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    seen: list[torch.Tensor] = []
    out = method.loss(recording_model(seen), x, y)
    assert torch.equal(seen[0], x)
    assert_close(out.total, F.cross_entropy(x, y))
    val_logits = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0]], np.float32)
    method.on_epoch_end(1, val_logits, np.array([0, 0, 1]))
    marked = weights_only_round_trip(method.state_dict())["mix_classes"]
    assert marked.tolist() == [True, False, True]
