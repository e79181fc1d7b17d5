"""What ``run`` and ``evaluate`` share beyond training (calibench/cli/evaluate.py): models
trained elsewhere, stored as runs without training: a state_dict file (``evaluate
--checkpoint``) and timm's pretrained weights (``run --epochs 0``), offline; one clear message
for every file that is not a state_dict of the backbone; and every dataset a command needs read
before the first run trains: a missing set costs seconds and leaves nothing behind (one message,
exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_datasets import write_fake_cifar10

from calibench.cli import main
from calibench.errors import CalibenchError
from calibench.evaluation.checkpoint import (
    build_model,
    load_weights,
    read_state_dict,
    state_digest,
)
from calibench.registry import DATASETS

CPU = ["--device", "cpu"]
NOISE8 = """
[datasets.noise8]
format = "npz"
path = "noise8.npz"
"""


def complete_runs(out: Path, method: str) -> list[Path]:
    return sorted(p.parent for p in out.glob(f"runs/*/*/{method}/*/metrics.json"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A one-epoch digits run of ce and a copy of its best.pt, with an 8x8 grayscale npz dataset
    declared beside it (an OOD set of the digits' shape). Not the shared ``trained`` store: its
    ls run would add a run to every report here, which costs more than training ce."""
    tmp = tmp_path_factory.mktemp("exported")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    np.savez(tmp / "noise8.npz", x_train=x, y_train=np.arange(30) % 2, x_test=x[:10],
             y_test=np.arange(10) % 2)  # fmt: skip
    (tmp / "benchmark.toml").write_text(
        Path(__file__).resolve().parents[1].joinpath("benchmark.toml").read_text() + NOISE8
    )
    out = tmp / "out"
    argv = ["run", "--methods", "ce", "--epochs", "1", "--output", str(out), *CPU]
    assert main([*argv, "--config", str(tmp / "benchmark.toml")]) == 0
    (run_dir,) = complete_runs(out, "ce")
    shutil.copy(run_dir / "best.pt", tmp / "weights.pt")
    yield tmp, out, run_dir
    DATASETS.unregister("noise8")


def test_a_copied_best_pt_is_one_complete_run_with_the_same_accuracy(exported, capsys):
    tmp, out, original = exported
    argv = ["evaluate", "--checkpoint", str(tmp / "weights.pt"), "--backbone", "small_cnn"]
    argv += ["--dataset", "digits", "--ood", "noise8", "--output", str(out), *CPU]
    argv += ["--config", str(tmp / "benchmark.toml")]
    assert main(argv) == 0
    (run_dir,) = complete_runs(out, "checkpoint")
    config = json.loads((run_dir / "config.json").read_text())
    state = torch.load(tmp / "weights.pt", weights_only=True)
    assert config["hparams"] == {"sha256": state_digest(state)}
    assert config["training"]["epochs"] == 0 and config["ood"] == ["noise8"]
    ours = json.loads((run_dir / "metrics.json").read_text())
    theirs = json.loads((original / "metrics.json").read_text())
    assert ours["acc"] == theirs["acc"] and ours["n_test"] == theirs["n_test"] == 360
    assert 0 <= ours["ood_noise8_auroc_entropy"] <= 1
    a, b = np.load(run_dir / "logits.npz"), np.load(original / "logits.npz")
    np.testing.assert_allclose(a["test_logits"], b["test_logits"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(a["val_labels"], b["val_labels"])
    assert "stored checkpoint / digits / small_cnn / seed 0" in capsys.readouterr().out
    assert main(argv) == 0
    assert (
        "checkpoint / digits / small_cnn / seed 0: complete (use --force" in capsys.readouterr().out
    )


def test_a_checkpoint_run_goes_through_report_shift_and_compare(exported):
    tmp, out, _ = exported
    assert main(["evaluate", "--shift", "corrupt", "--methods", "check*", "--corruptions",
                 "contrast", "--output", str(out), *CPU]) == 0  # fmt: skip
    (run_dir,) = complete_runs(out, "checkpoint")
    assert (run_dir / "shift-digits-c-calibench.npz").is_file()
    assert main(["report", "--output", str(out), "--format", "csv,html", "--mixing-samples", "50",
                 "--config", str(tmp / "benchmark.toml")]) == 0  # fmt: skip
    results = pd.read_csv(out / "report" / "results.csv")
    rows = results.set_index("method")
    assert rows.loc["checkpoint", "acc"] == pytest.approx(rows.loc["ce", "acc"], abs=1e-12)
    assert rows.loc["checkpoint", "epochs"] == 0
    shift = pd.read_csv(out / "report" / "shift.csv")
    assert set(shift["method"]) == {"checkpoint"}
    assert "checkpoint" in (out / "report" / "index.html").read_text()
    assert main(["compare", "checkpoint", "ce", "--output", str(out)]) == 0


def test_evaluate_flags_without_checkpoint_are_refused(capsys):
    assert main(["evaluate", "--backbone", "small_cnn"]) == 2
    assert "--backbone: only with --checkpoint FILE" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "needs --shift NAME" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "w.pt", "--dataset", "digits"]) == 2
    assert "needs --backbone NAME and --dataset NAME" in capsys.readouterr().err


# ----------------------------------------------------------------- files that are not weights


class Lightning(dict):
    pass


def _saved(tmp_path: Path, obj) -> Path:
    path = tmp_path / "file.pt"
    torch.save(obj, path)
    return path


def test_what_is_not_a_state_dict_says_what_it_is(tmp_path):
    model = build_model("digits", "small_cnn")
    cases = {
        "pickled Python objects": model,
        "PyTorch Lightning checkpoint": {"state_dict": {}, "pytorch-lightning_version": "2.4"},
        "training checkpoint": {"model": {}, "optimizer": {}, "epoch": 3},
        "holds a list": [1, 2],
        "entries 'epoch' are not tensors": {"epoch": 3, "w": torch.zeros(1)},
    }
    for message, obj in cases.items():
        with pytest.raises(CalibenchError, match=message):
            read_state_dict(_saved(tmp_path, obj))
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CalibenchError, match="is not a PyTorch file"):
        read_state_dict(tmp_path / "text.pt")
    with pytest.raises(CalibenchError, match="no such file"):
        read_state_dict(tmp_path / "absent.pt")


def test_weights_of_another_backbone_or_dataset_are_named(tmp_path):
    model = build_model("digits", "small_cnn")
    rgb = build_model("cifar10", "small_cnn").state_dict()
    with pytest.raises(CalibenchError, match=r"shape: features.0.weight \(32, 3, 3, 3\)"):
        load_weights(model, rgb, "w.pt")
    other = build_model("digits", "small_resnet").state_dict()
    with pytest.raises(CalibenchError, match="missing: features.0.weight.*unexpected: "):
        load_weights(model, other, "w.pt")
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(CalibenchError, match="Remove the 'module.' prefix"):
        load_weights(model, wrapped, "w.pt")


def test_a_bad_checkpoint_exits_2_before_anything_is_stored(tmp_path, capsys):
    torch.save(build_model("digits", "small_cnn"), tmp_path / "model.pt")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--backbone", "small_cnn"]
    assert main([*argv, "--dataset", "digits", "--output", str(tmp_path / "o"), *CPU]) == 2
    err = capsys.readouterr().err
    assert "torch.save(model.state_dict(), FILE)" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "runs").exists()


# ------------------------------------------------------------------------------------ timm

TIMM = "test_resnet.r160_in1k"


def test_timm_weights_as_a_checkpoint(tmp_path):
    model = build_model("digits", f"timm/{TIMM}")
    torch.save(model.state_dict(), tmp_path / "timm.pt")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "timm.pt"), "--backbone", f"timm/{TIMM}"]
    assert main([*argv, "--dataset", "digits", "--output", str(tmp_path / "o"), *CPU]) == 0
    (run_dir,) = complete_runs(tmp_path / "o", "checkpoint")
    stored = torch.load(run_dir / "best.pt", weights_only=True)
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())


def fake_hub_cache(root: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face cache holding ``timm/<TIMM>``'s weights (random ones, saved as the hub
    does), the way a machine that downloaded them once holds them."""
    import timm
    from safetensors.torch import save_file

    weights = {k: v.contiguous() for k, v in timm.create_model(TIMM).state_dict().items()}
    revision = "0" * 40
    repo = root / f"models--timm--{TIMM}"
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(weights, str(repo / "snapshots" / revision / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return weights


def test_pretrained_timm_weights_from_the_local_cache_as_an_untrained_run(tmp_path):
    weights = fake_hub_cache(tmp_path / "hub")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    argv = ["run", "--datasets", "digits", "--backbones", f"timm/{TIMM}", "--epochs", "0"]
    argv += ["--set", "training.pretrained=true", "--output", str(tmp_path / "o"), *CPU]
    done = subprocess.run(
        [sys.executable, "-m", "calibench.cli", *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "pretrained on 1000 classes" in done.stdout
    (run_dir,) = complete_runs(tmp_path / "o", "pretrained")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["training"]["pretrained"] is True and config["training"]["epochs"] == 0
    stored = torch.load(run_dir / "best.pt", weights_only=True)
    assert torch.equal(stored["layer1.0.conv1.weight"], weights["layer1.0.conv1.weight"])
    assert stored["fc.weight"].shape == (10, weights["fc.weight"].shape[1])


def test_epochs_0_needs_pretrained_timm_weights(tmp_path, capsys):
    argv = ["run", "--methods", "ce", "--epochs", "0", "--output", str(tmp_path / "o"), *CPU]
    assert main(argv) == 2
    assert "needs timm/<name> backbones and --set training.pretrained=true" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------- every dataset read before training


def test_a_missing_ood_set_stops_the_run_before_training(tmp_path, capsys, bypass_md5):
    write_fake_cifar10(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["run", "--datasets", "cifar10", "--methods", "ce", "--ood", "svhn", "--data-root"]
    assert main([*argv, str(tmp_path / "data"), "--output", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'svhn' not found" in err and "train_32x32.mat" in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.rglob("log.csv"))


def test_a_missing_training_set_stops_the_sweep_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--methods", "ce", "--datasets", "digits,cifar10", "--epochs", "1"]
    argv += ["--data-root", str(tmp_path / "empty"), "--output", str(out), "--device", "cpu"]
    assert main(argv) == 2
    assert "dataset 'cifar10' not found" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_ood_set_stops_a_checkpoint_evaluation(tmp_path, capsys):
    argv = ["evaluate", "--checkpoint", str(tmp_path / "w.pt"), "--backbone", "small_cnn"]
    argv += ["--dataset", "cifar10", "--ood", "svhn", "--data-root", str(tmp_path)]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert "dataset 'cifar10' not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
