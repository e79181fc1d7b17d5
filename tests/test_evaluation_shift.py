"""Dataset shift end to end (calibench/evaluation/shift.py): train, evaluate on the corrupted
test sets, and check that the report's numbers equal a recomputation from the stored logits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_datasets import write_fake_cifar10, write_fake_cifar_c

from calibench.cli import main
from calibench.evaluation.calibrators import get_calibrator, list_calibrators
from calibench.evaluation.metrics import softmax
from calibench.evaluation.record import metrics_of_probabilities
from calibench.evaluation.shift import read_shift_logits
from calibench.shift import OFFICIAL_CORRUPTIONS

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("runs/*/*/*/*/metrics.json"))


def test_fake_cifar10_c_through_run_evaluate_and_report(tmp_path, bypass_md5):
    data = tmp_path / "data"
    clean = write_fake_cifar10(data, n_train_per_batch=8, n_test=10)
    write_fake_cifar_c(data, list(OFFICIAL_CORRUPTIONS), clean.test_labels)
    out = tmp_path / "out"
    common = ["--data-root", str(data), "--output", str(out)]
    train = ["run", "--datasets", "cifar10", "--methods", "ce,mixup", "--epochs", "1"]
    train += ["--backbones", "small_cnn", "--set", "training.batch_size=8", "--device", "cpu"]
    assert main([*train, *common]) == 0
    assert not list(out.glob("runs/**/shift-*.npz"))
    evaluate = ["evaluate", "--shift", "cifar10-c", "--corruptions", "fog,contrast"]
    assert main([*evaluate, "--device", "cpu", "--output", str(out)]) == 0
    assert main(["report", "--output", str(out)]) == 0

    shift = pd.read_csv(out / "report" / "shift.csv")
    assert set(shift["method"]) == {"ce", "mixup"}
    assert set(shift["corruption"]) == {"fog", "contrast"}
    assert sorted(shift["severity"].unique()) == [1, 2, 3, 4, 5]
    assert set(shift["set"]) == {"cifar10-c"}
    for run_dir in _run_dirs(out):
        temperature = json.loads((run_dir / "metrics.json").read_text())["temperature"]
        run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
        clean = np.load(run_dir / "logits.npz")
        vector = get_calibrator("vector").fit(clean["val_logits"], clean["val_labels"])
        stored = read_shift_logits(run_dir / "shift-cifar10-c.npz")
        assert len(stored) == 2 * 5
        for (corruption, severity), (logits, labels) in stored.items():
            assert len(labels) == 10
            for calibrator, probs in (
                ("none", softmax(logits)),
                ("temperature", softmax(logits.astype(np.float64) / temperature)),
                ("vector", vector.transform(logits)),
            ):
                row = shift[
                    (shift["run_id"] == run_id)
                    & (shift["corruption"] == corruption)
                    & (shift["severity"] == severity)
                    & (shift["calibrator"] == calibrator)
                ]
                assert len(row) == 1
                expected = metrics_of_probabilities(probs, labels)
                for metric in ("acc", "ece", "adaece", "nll"):
                    assert row[metric].item() == pytest.approx(expected[metric], rel=1e-9)
    text = (out / "report" / "shift.md").read_text()
    assert text.count("| cifar10-c |") == 2 * 5 * (1 + len(list_calibrators()))
    calibrated = pd.read_csv(out / "report" / "calibrators.csv")
    assert set(calibrated["calibrator"]) == {"none", *list_calibrators()}
    for run_dir in _run_dirs(out):
        clean = np.load(run_dir / "logits.npz")
        run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
        isotonic = get_calibrator("isotonic").fit(clean["val_logits"], clean["val_labels"])
        expected = metrics_of_probabilities(
            isotonic.transform(clean["test_logits"]), clean["test_labels"]
        )
        row = calibrated[
            (calibrated["run_id"] == run_id) & (calibrated["calibrator"] == "isotonic")
        ]
        for metric in ("acc", "ece", "nll"):
            assert row[metric].item() == pytest.approx(expected[metric], rel=1e-9)
    assert list((out / "report" / "shift").glob("*.png"))


def test_shift_of_another_dataset_is_rejected_before_training(tmp_path, capsys):
    argv = ["run", "--methods", "ce", "--shift", "cifar10-c", "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--shift corrupt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_real_fashion_mnist_with_generated_corruptions(tmp_path, monkeypatch):
    if not DEBIAN_FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must install dataset-fashion-mnist (see .ci/run)")
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    monkeypatch.setenv("CALIBENCH_DATA", str(tmp_path / "data"))
    out = tmp_path / "out"
    argv = ["run", "--datasets", "fashion_mnist", "--methods", "ce", "--backbones", "small_cnn"]
    argv += ["--epochs", "1", "--shift", "corrupt", "--corruptions", "gaussian_noise,contrast"]
    argv += ["--device", "cpu", "--output", str(out)]
    assert main(argv) == 0
    (run_dir,) = _run_dirs(out)
    stored = read_shift_logits(run_dir / "shift-fashion_mnist-c-calibench.npz")
    assert sorted(stored) == [(c, s) for c in ("contrast", "gaussian_noise") for s in range(1, 6)]
    clean_acc = json.loads((run_dir / "metrics.json").read_text())["acc"]
    worst = np.mean(stored[("gaussian_noise", 5)][0].argmax(1) == stored[("gaussian_noise", 5)][1])
    # one epoch of the small CNN reaches 0.45 to 0.65 depending on the CPU's float arithmetic;
    # chance is 0.1
    assert clean_acc > 0.3 and worst < clean_acc
    assert main(["report", "--output", str(out)]) == 0
    assert "fashion_mnist-c-calibench" in (out / "report" / "shift.md").read_text()


def test_a_cifar_c_folder_with_only_the_named_corruptions(tmp_path, bypass_md5):
    data = tmp_path / "data"
    clean = write_fake_cifar10(data, n_train_per_batch=8, n_test=10)
    write_fake_cifar_c(data, ["fog", "contrast"], clean.test_labels)
    out = tmp_path / "out"
    argv = ["run", "--datasets", "cifar10", "--methods", "ce", "--epochs", "1", "--backbones"]
    argv += ["small_cnn", "--set", "training.batch_size=8", "--device", "cpu"]
    argv += ["--data-root", str(data), "--output", str(out), "--shift", "cifar10-c"]
    assert main([*argv, "--corruptions", "fog,contrast"]) == 0
    (run_dir,) = _run_dirs(out)
    stored = read_shift_logits(run_dir / "shift-cifar10-c.npz")
    assert sorted({c for c, _ in stored}) == ["contrast", "fog"]


def test_missing_shift_files_stop_the_run_before_training(tmp_path, bypass_md5, capsys):
    data = tmp_path / "data"
    clean = write_fake_cifar10(data, n_train_per_batch=8, n_test=10)
    write_fake_cifar_c(data, ["fog"], clean.test_labels)
    argv = ["run", "--datasets", "cifar10", "--methods", "ce", "--shift", "cifar10-c"]
    argv += ["--data-root", str(data), "--output", str(tmp_path / "out")]
    assert main([*argv, "--corruptions", "fog,contrast"]) == 2
    assert "contrast.npy" in capsys.readouterr().err
    assert main(argv) == 2
    assert "gaussian_noise.npy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
