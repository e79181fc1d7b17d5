"""``calibench metrics``: the same numbers as the run itself, any file format, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from store_helpers import specs_of

from calibench.cli import main
from calibench.evaluation.metrics import softmax
from calibench.store.index import Store

GOLDEN_PROBS = np.array(
    [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]]
)
GOLDEN_LABELS = np.array([0, 1, 2, 0])


@pytest.fixture
def run_dir(trained):
    """The shared store's ce run (one epoch on digits): logits.npz and metrics.json, read only."""
    return Store(trained).run_dir(specs_of(["ce"], 1)[0])


def metrics_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["metrics", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_equals_the_in_run_metrics_exactly(run_dir, capsys):
    stored = json.loads((run_dir / "metrics.json").read_text())
    result = metrics_json(capsys, str(run_dir / "logits.npz"))
    shared = sorted(set(stored) & set(result))
    assert {"acc", "nll", "brier", "ece", "adaece", "cece", "mce", "temperature"} <= set(shared)
    assert {f"{m}_ts" for m in ("acc", "nll", "brier", "ece", "adaece", "cece", "mce")} <= set(
        shared
    )
    for key in shared:
        assert result[key] == stored[key], key


def test_every_file_format_gives_the_same_numbers(run_dir, tmp_path, capsys):
    with np.load(run_dir / "logits.npz") as f:
        arrays = {k: f[k] for k in f.files}
    np.save(tmp_path / "test.npy", arrays["test_logits"])
    np.savetxt(tmp_path / "labels.csv", arrays["test_labels"], fmt="%d", header="label")
    torch.save({"logits": torch.from_numpy(arrays["val_logits"])}, tmp_path / "val.pt")
    np.savetxt(tmp_path / "val_labels.txt", arrays["val_labels"], fmt="%d")
    split = metrics_json(
        capsys,
        str(tmp_path / "test.npy"),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--val-logits",
        str(tmp_path / "val.pt"),
        "--val-labels",
        str(tmp_path / "val_labels.txt"),
    )
    whole = metrics_json(capsys, str(run_dir / "logits.npz"))
    assert split == whole


def test_without_validation_logits_no_temperature(run_dir, tmp_path, capsys):
    with np.load(run_dir / "logits.npz") as f:
        np.savez(tmp_path / "t.npz", logits=f["test_logits"], labels=f["test_labels"])
    result = metrics_json(capsys, str(tmp_path / "t.npz"), "--n-bins", "10")
    assert "temperature" not in result and "ece_ts" not in result
    assert result["n_bins"] == 10 and 0 <= result["ece"] <= 1


def test_probabilities_with_the_flag_golden_ece(tmp_path, capsys):
    """GOLDEN_PROBS with 3 bins has ECE 0.2 (tests/test_metrics.py); log p as logits keeps p."""
    np.savez(tmp_path / "p.npz", logits=GOLDEN_PROBS, labels=GOLDEN_LABELS)
    result = metrics_json(capsys, str(tmp_path / "p.npz"), "--probabilities", "--n-bins", "3")
    assert result["ece"] == pytest.approx(0.2)
    assert result["acc"] == pytest.approx(0.5)


def test_probabilities_with_zeros_are_usable(tmp_path, capsys):
    probs = np.array([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    np.savez(tmp_path / "p.npz", logits=probs, labels=np.array([0, 1, 1]))
    result = metrics_json(capsys, str(tmp_path / "p.npz"), "--probabilities", "--n-bins", "2")
    assert result["acc"] == 1.0
    assert result["ece"] == pytest.approx((0.0 + 0.3) / 3)


def write(tmp_path, logits, labels) -> list[str]:
    np.save(tmp_path / "z.npy", logits)
    np.save(tmp_path / "y.npy", labels)
    return [str(tmp_path / "z.npy"), "--labels", str(tmp_path / "y.npy")]


Z = np.random.default_rng(0).normal(size=(6, 3)) * 3
Y = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (Z, Y[:5], "has 5 labels but the logits have 6 rows"),
        (Z[:, 0], Y, "expected (N, K)"),
        (Z[:, :1], Y, "K >= 2"),
        (np.where(np.eye(6, 3) > 0, np.nan, Z), Y, "NaN"),
        (np.where(np.eye(6, 3) > 0, np.inf, Z), Y, "infinite"),
        (Z, Y + 1, "outside the 3 classes"),
        (Z, Y - 1, "outside the 3 classes"),
        (Z, Y + 0.5, "not an integer"),
        (Z, np.eye(3)[Y], "one-hot"),
        (softmax(Z), Y, "looks like probabilities"),
        (np.array([["a", "b"]] * 6), Y, "not numbers"),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path, capsys, logits, labels, message):
    assert main(["metrics", *write(tmp_path, logits, labels)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_integral_float_labels_are_accepted(tmp_path, capsys):
    as_int = metrics_json(capsys, *write(tmp_path, Z, Y))
    as_float = metrics_json(capsys, *write(tmp_path, Z, Y.astype(np.float32)))
    assert as_int == as_float


def test_probabilities_flag_on_logits_is_refused(tmp_path, capsys):
    assert main(["metrics", *write(tmp_path, Z, Y), "--probabilities"]) == 2
    assert "drop --probabilities" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.npy", "does not exist"), ("z.json", "unknown file type")],
)
def test_unreadable_files(tmp_path, capsys, name, message):
    (tmp_path / "z.json").write_text("{}")
    assert main(["metrics", str(tmp_path / name)]) == 2
    assert message in capsys.readouterr().err


def test_npz_without_known_keys_names_its_arrays(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", scores=Z, targets=Y)
    assert main(["metrics", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err
    assert "scores, targets" in err and "test_logits or logits" in err


def test_val_labels_without_val_logits(tmp_path, capsys):
    assert main(["metrics", *write(tmp_path, Z, Y), "--val-labels", str(tmp_path / "y.npy")]) == 2
    assert "--val-labels needs --val-logits" in capsys.readouterr().err
