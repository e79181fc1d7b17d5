"""The optional pieces of the method contract (calibench/method.py, docs/stateful-methods.md)
that CRL and CAMixup use: setup, sample indices, the end-of-epoch hook and method state in the
checkpoint, as the trainer honours them; and the contract's refusals (no setup, saved state of
the wrong size, hyperparameters out of range)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StopAfter, tiny_spec

import calibench.training.loop
from calibench import CalibenchError, Loss, Method, get_method, register_method
from calibench.data import load_dataset
from calibench.method import TrainingSetup
from calibench.registry import METHODS
from calibench.store.index import Store
from calibench.training.runner import train_run


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


# The trainer


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
