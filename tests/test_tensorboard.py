"""``calibench run --log tensorboard``: the event files hold every column of log.csv per epoch."""

from __future__ import annotations

import builtins

import pandas as pd
import pytest

from calibench.cli import main
from calibench.errors import CalibenchError
from calibench.report.collect import load_run
from calibench.store.index import Store

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from calibench.training.tensorboard import TensorBoardProgress, summary_writer_class  # noqa: E402


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(logdir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def check_against_log(logdir, run_dir) -> None:
    log = pd.read_csv(run_dir / "log.csv")
    found = scalars(logdir)
    assert set(found) == set(log.columns) - {"epoch"}
    for column in found:
        assert [s for s, _ in found[column]] == log["epoch"].tolist()
        assert [v for _, v in found[column]] == pytest.approx(log[column].tolist(), rel=1e-6)


def test_run_logs_every_epoch_and_term(tmp_path, capsys):
    argv = ["run", "--methods", "rankmixup_mndcg", "--epochs", "2", "--device", "cpu"]
    assert main([*argv, "--output", str(tmp_path), "--log", "tensorboard"]) == 0
    (run_dir,) = (tmp_path / "runs").glob("*/*/*/seed*")
    (logdir,) = (tmp_path / "tensorboard").iterdir()
    assert logdir.name.startswith("digits_small_cnn_rankmixup_mndcg_seed0_")
    check_against_log(logdir, run_dir)
    assert {"loss", "ce", "rank", "val_acc", "val_ece", "lr"} <= set(scalars(logdir))

    class Quiet:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    progress = TensorBoardProgress(Quiet(), Store(tmp_path))
    progress.root = tmp_path / "exported"
    spec = load_run(Store(tmp_path).complete_runs()[0])[0]
    progress.finish(spec, {}, 0.0)
    (exported,) = (tmp_path / "exported").iterdir()
    check_against_log(exported, run_dir)


def test_missing_tensorboard_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(CalibenchError, match="pip install tensorboard"):
        summary_writer_class()
