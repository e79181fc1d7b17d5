"""CRL and CAMixup (docs/stateful-methods.md) and the optional pieces of the method contract
they use: sample indices, setup, the end-of-epoch hook and method state in the checkpoint."""

from __future__ import annotations

import io
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StopAfter, tiny_spec
from torch import nn
from torch.testing import assert_close

import calibench.training.loop
from calibench import CalibenchError, Loss, Method, get_method, register_method
from calibench.bench.steps import bench_methods
from calibench.data import DeviceLoader, LoaderConfig, load_dataset
from calibench.method import TrainingSetup
from calibench.plugins import builtin_methods_dir, load_plugin_file
from calibench.registry import DATASETS, METHODS
from calibench.store.index import Store
from calibench.training.runner import train_run

CRL = load_plugin_file(builtin_methods_dir() / "crl.py")
CAMIXUP = load_plugin_file(builtin_methods_dir() / "camixup.py")


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


def test_stateful_methods_refuse_to_run_without_setup() -> None:
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(CalibenchError, match="method crl: .*setup"):
        get_method("crl").loss(lambda v: v, x, y, torch.arange(4))
    with pytest.raises(CalibenchError, match="method camixup: .*setup"):
        get_method("camixup").loss(lambda v: v, x, y)


def test_saved_state_of_the_wrong_size_is_refused() -> None:
    method = get_method("crl")
    method.setup(TrainingSetup(num_train=5, num_classes=3))
    with pytest.raises(CalibenchError, match="covers 4 samples but the training split has 5"):
        method.load_state_dict(
            {"correct_counts": torch.zeros(4, dtype=torch.int64), "epochs_done": 1}
        )
    with pytest.raises(CalibenchError, match="holds method state"):
        get_method("ce").load_state_dict({"mix_classes": torch.zeros(3)})


@pytest.mark.parametrize(
    ("name", "hp", "param"),
    [("crl", {"weight": -1.0}, "weight"), ("camixup", {"alpha": 0.0}, "alpha")],
)
def test_invalid_hyperparameters_raise(name: str, hp: dict, param: str) -> None:
    with pytest.raises(CalibenchError, match=f"method {name}: {param} must be"):
        get_method(name, **hp)


# The loader and the trainer


def test_loader_stream_is_the_same_with_and_without_indices() -> None:
    spec = DATASETS.get("digits")
    data = load_dataset("digits", "", False, 0)
    plain_gen, indexed_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    cpu = torch.device("cpu")
    plain = DeviceLoader(LoaderConfig(data.train, spec, 64, cpu, True, plain_gen))
    indexed = DeviceLoader(LoaderConfig(data.train, spec, 64, cpu, True, indexed_gen))
    for _ in range(2):
        seen = []
        for (x, y), (xi, yi, idx) in zip(plain, indexed.indexed(), strict=True):
            assert torch.equal(x, xi) and torch.equal(y, yi)
            assert torch.equal(data.train.labels[idx], y)
            seen.append(idx)
        epoch = torch.cat(seen)
        assert len(epoch.unique()) == len(epoch) == len(data.train) // 64 * 64
    assert torch.equal(plain_gen.get_state(), indexed_gen.get_state())
    val = DeviceLoader(LoaderConfig(data.val, spec, 50, torch.device("cpu")))
    for x, _, idx in val.indexed():
        assert torch.equal(x, val.normalise(data.val.images[idx]))


def test_bench_times_the_stateful_methods() -> None:
    rows = bench_methods(["crl", "camixup"], "digits", "small_cnn", 8, 1, torch.device("cpu"), 0)
    assert [(r.method, r.forward_passes) for r in rows] == [("crl", 1), ("camixup", 1)]


@pytest.fixture
def registered():
    names: list[str] = []
    yield names
    for name in names:
        METHODS.unregister(name)


def test_trainer_calls_the_hooks(tmp_path, registered, monkeypatch) -> None:
    calls: dict[str, list] = {"setup": [], "loss": [], "epoch_end": [], "state": []}

    @register_method("test_hook_counter")
    class Counter(Method):
        uses_indices = True

        def setup(self, info):
            calls["setup"].append(info)

        def loss(self, model, x, y, indices):
            calls["loss"].append((indices.clone(), y.clone()))
            return Loss(F.cross_entropy(model(x), y))

        def on_epoch_end(self, epoch, val_logits, val_labels):
            calls["epoch_end"].append((epoch, val_logits, val_labels))

        def state_dict(self):
            calls["state"].append(len(calls["epoch_end"]))
            return {"epochs": len(calls["epoch_end"])}

    registered.append("test_hook_counter")
    predictions: list[int] = []
    real_predict = calibench.training.loop.predict_logits

    def counting_predict(*args, **kwargs):
        predictions.append(1)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(calibench.training.loop, "predict_logits", counting_predict)
    spec = tiny_spec("test_hook_counter", epochs=2)
    store = Store(tmp_path)
    train_run(spec, store)
    data = load_dataset("digits", "", False, 0)

    assert calls["setup"] == [TrainingSetup(num_train=len(data.train), num_classes=10)]
    steps = len(data.train) // 64
    assert len(calls["loss"]) == 2 * steps
    for epoch in range(2):
        batches = calls["loss"][epoch * steps : (epoch + 1) * steps]
        indices = torch.cat([i for i, _ in batches])
        assert len(indices.unique()) == len(indices)
        assert torch.equal(data.train.labels[indices], torch.cat([y for _, y in batches]))
    assert [e for e, *_ in calls["epoch_end"]] == [1, 2]
    assert calls["state"] == [1, 2]
    assert len(predictions) == 2 + 2
    header, *rows = (store.run_dir(spec) / "log.csv").read_text().splitlines()
    val_acc = header.split(",").index("val_acc")
    for (_, logits, labels), row in zip(calls["epoch_end"], rows, strict=True):
        assert logits.shape == (len(data.val), 10) and logits.dtype == np.float32
        assert np.array_equal(labels, data.val.labels.numpy())
        assert float(row.split(",")[val_acc]) == pytest.approx(np.mean(logits.argmax(1) == labels))
    last = torch.load(store.run_dir(spec) / "last.pt", weights_only=False)
    assert last["method_state"] == {"epochs": 2}


def test_old_style_plugin_trains_and_resumes(tmp_path, registered) -> None:
    @register_method("test_old_style")
    class OldStyle(Method):
        def loss(self, model, x, y):
            ce = F.cross_entropy(model(x), y)
            return Loss(ce, {"ce": ce})

    registered.append("test_old_style")
    spec = tiny_spec("test_old_style", epochs=2)
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, store, StopAfter(1))
    resumed = train_run(spec, store)
    assert torch.load(store.run_dir(spec) / "last.pt", weights_only=False)["method_state"] == {}
    assert 0 <= resumed["ece"] <= 1 and resumed["best_epoch"] in (1, 2)


def _final_state(store: Store, spec) -> dict:
    return torch.load(store.run_dir(spec) / "last.pt", weights_only=False)


@pytest.mark.parametrize(("name", "column"), [("crl", "rank"), ("camixup", "mixed")])
def test_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch, name, column) -> None:
    """Two epochs straight against one epoch, an interruption and a resumed second epoch. The
    second epoch depends on the state saved after the first (CRL's history; CAMixup's marked
    classes), so that state must come back: without it, the result changes."""
    spec = tiny_spec(name, epochs=2)
    straight = train_run(spec, Store(tmp_path / "straight"))
    store = Store(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, store, StopAfter(1))
    shutil.copytree(tmp_path / "interrupted", tmp_path / "stateless")
    resumed = train_run(spec, store)
    for key in ("acc", "nll", "ece", "temperature", "best_epoch"):
        assert resumed[key] == straight[key]
    a, b = _final_state(Store(tmp_path / "straight"), spec), _final_state(store, spec)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key])
    assert a["method_state"].keys() == b["method_state"].keys()
    for key, value in a["method_state"].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["method_state"][key]))
    header, *rows = (store.run_dir(spec) / "log.csv").read_text().splitlines()
    assert float(rows[1].split(",")[header.split(",").index(column)]) > 0

    cls = type(get_method(name))
    monkeypatch.setattr(cls, "load_state_dict", lambda self, state: None)
    stateless = train_run(spec, Store(tmp_path / "stateless"))
    assert stateless["nll"] != straight["nll"]
