"""What a sweep prints: run names that tell grid runs apart, the runner's actions, time estimates
from measured epochs, live bars on a terminal and one line per epoch elsewhere."""

from __future__ import annotations

import dataclasses
import io

import pytest
from rich.console import Console

from calibench.cli.display import RichProgress, duration
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


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "loss": 0.5, "val_acc": 0.9, "val_ece": 0.031, "seconds": 2.0}


def _train(progress: RichProgress, runs: list[RunSpec]) -> None:
    for run in runs:
        progress.start(run, 1)
        for epoch in range(1, run.training.epochs + 1):
            progress.batch(3, 1, 16)
            progress.epoch(_row(epoch))
        progress.finish(run, {"acc": 0.9, "ece": 0.03, "ece_ts": 0.02, "temperature": 1.2}, 4.0)
    progress.close()


def test_without_a_terminal_each_epoch_is_one_plain_line():
    runs = [spec("focal", epochs=2, gamma=g) for g in (1.0, 3.0)]
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    _train(RichProgress(console, [PlannedRun(r, "pending", "train") for r in runs]), runs)
    lines = out.getvalue().splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 4
    assert epochs[0].startswith("epoch 1/2 [1/2] focal / digits / small_cnn / seed 0 (gamma=1.0)")
    assert epochs[3].startswith("epoch 2/2 [2/2] focal / digits / small_cnn / seed 0 (gamma=3.0)")
    assert "loss 0.5000" in epochs[0] and "val ECE 3.10%" in epochs[0] and "2.0s" in epochs[0]
    assert "ETA run 0:00:02, sweep 0:00:06" in epochs[0]
    assert epochs[3].endswith("ETA run 0:00:00, sweep 0:00:00")
    assert sum(line.startswith("done focal") for line in lines) == 2
    assert "\x1b[" not in out.getvalue()


def test_on_a_terminal_bars_show_batches_rate_and_time_left():
    run = spec("ce", epochs=2)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    progress = RichProgress(console, [PlannedRun(run, "pending", "train")])
    progress.start(run, 1)
    progress.batch(3, 1, 16)
    progress.close()
    text = out.getvalue()
    assert "epoch 1/2, 1/3 batches" in text and "img/s" in text and "run ETA" in text
    assert "sweep" in text and "0/1 runs" in text
    assert not any(line.startswith("epoch ") for line in text.splitlines())


def test_a_resumed_run_counts_only_its_remaining_epochs():
    run = spec("ce", epochs=10)
    planned = [PlannedRun(run, "interrupted", "resume", 6)]
    progress = RichProgress(Console(file=io.StringIO()), planned)
    progress.start(run, 7)
    progress.epoch(_row(7))
    assert progress.clock.run_left(run) == 6.0
    assert progress.clock.sweep_left() == 6.0


def test_durations_read_as_hours_minutes_seconds():
    assert duration(None) == "-"
    assert duration(3725.4) == "1:02:05"


def test_runs_finished_in_worker_processes_teach_the_clock_their_epoch_time():
    a, b = spec("ce", epochs=4), spec("ce", seed=1, epochs=4)
    out = io.StringIO()
    planned = [PlannedRun(a, "pending", "train"), PlannedRun(b, "pending", "train")]
    progress = RichProgress(Console(file=out, force_terminal=False), planned)
    progress.finish(a, {"acc": 0.9, "ece": 0.03, "ece_ts": 0.02, "temperature": 1.2}, 8.0)
    assert progress.clock.sweep_left() == 8.0
    assert out.getvalue().rstrip().endswith("8.0s; 1/2 runs, sweep ETA 0:00:08")


def test_settings_that_differ_between_datasets_do_not_name_a_run():
    cifar = dataclasses.replace(spec(epochs=200), dataset="cifar10")
    digits = spec(epochs=4)
    labels = run_labels([cifar, digits])
    assert labels[cifar.run_id] == "ce / cifar10 / small_cnn / seed 0"
    assert labels[digits.run_id] == "ce / digits / small_cnn / seed 0"


def test_status_names_the_settings_of_grid_runs():
    import json

    from calibench.cli.display import print_status

    runs = [spec("focal", epochs=2, gamma=g) for g in (1.0, 3.0)] + [spec("ce", epochs=2)]
    stored = {"status": "complete", "epoch": 2, "epochs": 2, "started": 0.0}
    rows = [{**r.keys(), **stored, "config": json.dumps(r.to_dict())} for r in runs]
    out = io.StringIO()
    print_status(rows, Console(file=out, width=200))
    lines = out.getvalue().splitlines()
    assert any("focal" in line and "gamma=1.0" in line for line in lines)
    assert any("focal" in line and "gamma=3.0" in line for line in lines)
    assert "3 complete" in lines[-1]
