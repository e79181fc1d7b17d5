"""calibench.spec: the training protocol's ranges, run ids pinned to their values, and a module
that stays free of torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from calibench import CalibenchError
from calibench.spec import MAX_SEED, SEED_RANGE, RunSpec, Training, run_name


@pytest.mark.parametrize("module", ["calibench.spec", "calibench.settings", "calibench.registry"])
def test_leaf_modules_import_no_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_ids_are_pinned() -> None:
    """The run id rules (docs/protocol.md): values computed before the settings moved into the
    annotations. A change here orphans every stored run."""
    plain = RunSpec("ce", "digits", "small_cnn", 0, Training())
    assert (plain.run_id, plain.config_id) == ("c5bb633cbac0", "53282c4bc9b8")
    mrl = RunSpec(
        "rankmixup_mrl",
        "cifar10",
        "resnet50",
        3,
        Training(epochs=10, precision="bf16", compile=True),
        hparams={"alpha": 2.0, "margin": 2.0, "weight": 0.1, "confidence": "logit"},
        ood=("svhn",),
    )
    assert (mrl.run_id, mrl.config_id) == ("e3e0c73ee99c", "5095d13dfee0")
    assert run_name(mrl) == "cifar10_resnet50_rankmixup_mrl_seed3_e3e0c73ee99c"


def test_execution_switches_stay_out_of_the_run_id() -> None:
    base = RunSpec("ce", "digits", "small_cnn", 0, Training())
    fast = RunSpec("ce", "digits", "small_cnn", 0, Training(compile=True, channels_last=False))
    assert base.run_id == fast.run_id
    assert RunSpec.from_dict(fast.to_dict()) == fast


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 100_001}, "epochs must be <= 100000, got 100001"),
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\], got 1.5"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"grad_clip": -1.0}, r"grad_clip must be >= 0 \(0 turns clipping off\), got -1.0"),
        ({"split_seed": -1}, "split_seed must be >= 0"),
        ({"milestones": (0.0,)}, r"milestones\[0\] must be in \(0, 1\]"),
        ({"temperature_fit": "ece"}, "temperature_fit must be one of 'ece_grid', 'nll'"),
        ({"precision": "fp16"}, "precision must be one of 'fp32', 'bf16'"),
        ({"compile": "yes"}, "compile must be true or false or 'auto'"),
    ],
)
def test_training_ranges(changes: dict, message: str) -> None:
    with pytest.raises(CalibenchError, match=message):
        Training(**changes)


def test_edges_of_the_training_ranges_are_valid() -> None:
    edge = Training(epochs=1, milestones=(1.0,), lr_decay=1.0, momentum=0.0, grad_clip=0.0)
    assert edge.milestone_epochs() == [1]
    assert Training(epochs=10, milestones=(0.4, 0.6)).milestone_epochs() == [4, 6]
    assert SEED_RANGE.holds(MAX_SEED) and not SEED_RANGE.holds(MAX_SEED + 1)
