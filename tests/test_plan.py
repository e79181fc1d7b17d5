"""What a sweep would do, read from the store: the runner's actions, the epochs each run has
to go, run names that tell grid runs apart, and time estimates from measured epochs."""

from __future__ import annotations

import dataclasses

import pytest

from calibench.cli.plan import (
    EpochTimes,
    PlannedRun,
    SweepClock,
    action_for,
    plan_runs,
    run_labels,
)
from calibench.spec import RunSpec, Training


def spec(method="ce", seed=0, epochs=4, backbone="small_cnn", lr=0.1, **hparams) -> RunSpec:
    """A digits run of ``method`` with these settings (the runs these tests plan)."""
    return RunSpec(
        method, "digits", backbone, seed, Training(epochs=epochs, lr=lr), hparams, device="cpu"
    )


def test_labels_name_the_settings_that_vary_between_runs():
    grid = [spec("focal", gamma=g, seed=s) for g in (1.0, 3.0) for s in (0, 1)]
    plain = spec("ce")
    labels = run_labels([*grid, plain])
    assert labels[plain.run_id] == "ce / digits / small_cnn / seed 0"
    assert labels[grid[0].run_id] == "focal / digits / small_cnn / seed 0 (gamma=1.0)"
    assert labels[grid[3].run_id] == "focal / digits / small_cnn / seed 1 (gamma=3.0)"
    assert len(set(labels.values())) == 5


def test_labels_name_varying_training_settings_and_nothing_else():
    runs = [spec(lr=0.1, gamma=2.0), spec(lr=0.05, gamma=2.0)]
    labels = run_labels(runs)
    assert labels[runs[1].run_id] == "ce / digits / small_cnn / seed 0 (training.lr=0.05)"
    assert run_labels(runs[:1])[runs[0].run_id] == "ce / digits / small_cnn / seed 0"


@pytest.mark.parametrize(
    ("status", "force", "retry", "action"),
    [
        ("pending", False, False, "train"),
        ("interrupted", False, False, "resume"),
        ("interrupted", True, False, "retrain"),
        ("complete", False, False, "skip"),
        ("complete", True, False, "retrain"),
        ("failed", False, False, "skip"),
        ("failed", False, True, "resume"),
        ("failed", True, True, "retrain"),
        ("running", True, True, "skip"),
    ],
)
def test_actions_follow_the_runner(status, force, retry, action):
    assert action_for(status, force, retry) == action


def test_plan_counts_the_epochs_each_run_has_to_go():
    runs = [spec(seed=s, epochs=10) for s in range(4)]
    rows = {
        runs[1].run_id: {"status": "interrupted", "epoch": 3},
        runs[2].run_id: {"status": "complete", "epoch": 10},
        runs[3].run_id: {"status": "failed", "epoch": 4, "error": "epoch 5: boom"},
    }
    planned = plan_runs(runs, rows, force=False, retry_failed=False)
    assert [p.status for p in planned] == ["pending", "interrupted", "complete", "failed"]
    assert [p.epochs_to_go for p in planned] == [10, 7, 0, 0]
    assert planned[3].note == "epoch 5: boom"
    forced = plan_runs(runs, rows, force=True, retry_failed=False)
    assert [p.epochs_to_go for p in forced] == [10, 10, 10, 10]


def test_epoch_times_prefer_the_same_method_then_the_same_dataset_and_backbone():
    times = EpochTimes()
    times.add(spec("ce"), [2.0, 4.0, 3.0])
    times.add(spec("rankmixup_mndcg"), [10.0])
    assert times.per_epoch(spec("ce", seed=5)) == 3.0
    assert times.per_epoch(spec("focal")) == pytest.approx(3.5)
    assert times.per_epoch(spec("ce", backbone="small_resnet")) is None
    assert times.per_epoch(spec("ce", backbone="small_resnet"), rough=True) == pytest.approx(3.5)


def test_sweep_clock_adds_what_each_run_has_left():
    a, b = spec("ce", epochs=4), spec("ce", seed=1, epochs=4)
    clock = SweepClock([PlannedRun(a, "pending", "train"), PlannedRun(b, "pending", "train")])
    assert clock.sweep_left() is None
    clock.started(a, 1)
    clock.epoch_done(a, 1, 5.0)
    assert clock.run_left(a) == 15.0
    assert clock.sweep_left() == 35.0
    assert clock.sweep_left(a, done=0.5) == 32.5
    clock.ended(a)
    assert clock.sweep_left() == 20.0
    clock.ended(b)
    assert clock.sweep_left() == 0.0


def test_settings_that_differ_between_datasets_do_not_name_a_run():
    cifar = dataclasses.replace(spec(epochs=200), dataset="cifar10")
    digits = spec(epochs=4)
    labels = run_labels([cifar, digits])
    assert labels[cifar.run_id] == "ce / cifar10 / small_cnn / seed 0"
    assert labels[digits.run_id] == "ce / digits / small_cnn / seed 0"
