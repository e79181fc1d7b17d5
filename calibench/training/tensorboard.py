"""TensorBoard logs of training (``calibench run --log tensorboard``).

Each run gets ``<output>/tensorboard/<run name>/`` with one scalar per log column (the loss, each
term the method logs, the learning rate, validation accuracy, NLL and ECE, seconds) at
step = epoch. With the local executor the epochs are written as they finish; runs trained by the
processes executor are written from their ``log.csv`` when they finish (SLURM jobs are not
logged). Needs the ``tensorboard`` package.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.spec import RunSpec
from calibench.store.files import RunDir
from calibench.store.index import Store

LOG_DIR = "tensorboard"


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; a clear error without the tensorboard
    package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CalibenchError(
            "--log tensorboard needs the tensorboard package: pip install tensorboard."
        ) from None
    return SummaryWriter


def write_row(writer: Any, row: dict[str, Any]) -> None:
    """Every finite numeric value of an epoch's log row as a scalar at step = epoch."""
    step = int(row["epoch"])
    for key, value in row.items():
        if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
            writer.add_scalar(key, float(value), step)


class TensorBoardProgress:
    """A :class:`calibench.training.loop.RunProgress` that passes every call on to ``inner``
    and writes each epoch's row to TensorBoard."""

    def __init__(self, inner: Any, store: Store) -> None:
        self.writer_class = summary_writer_class()
        self.inner = inner
        self.store = store
        self.root = store.root / LOG_DIR
        self._writer: Any = None
        self._live: set[str] = set()

    def _logdir(self, spec: RunSpec) -> Path:
        from calibench.spec import run_name

        return self.root / run_name(spec)

    def start(self, spec: RunSpec, first_epoch: int) -> None:
        self._close()
        self._writer = self.writer_class(log_dir=str(self._logdir(spec)))
        self._live.add(spec.run_id)
        self.inner.start(spec, first_epoch)

    def epoch(self, row: dict[str, Any]) -> None:
        if self._writer is not None:
            write_row(self._writer, row)
            self._writer.flush()
        self.inner.epoch(row)

    def finish(self, spec: RunSpec, metrics: dict[str, Any], seconds: float) -> None:
        self._close()
        if spec.run_id not in self._live:
            self.export(spec)
        self.inner.finish(spec, metrics, seconds)

    def fail(self, spec: RunSpec, reason: str) -> None:
        self._close()
        self.inner.fail(spec, reason)

    def export(self, spec: RunSpec) -> None:
        """Write a run trained elsewhere from its ``log.csv``."""
        import pandas as pd

        path = RunDir(self.store.run_dir(spec)) / RunDir.LOG
        if not path.exists():
            return
        writer = self.writer_class(log_dir=str(self._logdir(spec)))
        for row in pd.read_csv(path).to_dict("records"):
            write_row(writer, row)
        writer.close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        self._close()
        self.inner.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
