"""What a sweep prints: live bars on a terminal, one line per epoch elsewhere, run names with
their varying settings, and the tables of runs."""

from __future__ import annotations

import io

from rich.console import Console
from test_plan import spec

from calibench.cli.display import RichProgress, duration
from calibench.cli.plan import PlannedRun
from calibench.spec import RunSpec


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
