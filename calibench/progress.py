"""Rich progress display: a bar per run (epoch, loss, validation accuracy) and a line per
finished run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibench.config import RunSpec


class RichProgress:
    """Implements :class:`calibench.train.RunProgress` on a rich console."""

    def __init__(self, console: Console | None = None, total_runs: int = 1) -> None:
        self.console = console or Console()
        self.total_runs = total_runs
        self.done = 0
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, spec: RunSpec, first_epoch: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )
        self._progress.start()
        resumed = f" (resumed at epoch {first_epoch})" if first_epoch > 1 else ""
        self._task = self._progress.add_task(
            f"[{self.done + 1}/{self.total_runs}] {spec.label}{resumed}",
            total=spec.training.epochs,
            completed=first_epoch - 1,
            status="",
        )

    def epoch(self, row: dict[str, Any]) -> None:
        if self._progress is not None:
            status = f"loss {row['loss']:.3f}  val acc {100 * row['val_acc']:.1f}%"
            self._progress.update(self._task, completed=row["epoch"], status=status)

    def finish(self, spec: RunSpec, metrics: dict[str, Any], seconds: float) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.done += 1
        self.console.print(
            f"[green]done[/] {spec.label}: acc {100 * metrics['acc']:.2f}%  "
            f"ECE {100 * metrics['ece']:.2f}%  ECE(TS) {100 * metrics['ece_ts']:.2f}% "
            f"(T={metrics['temperature']:.1f})  {seconds:.1f}s",
            soft_wrap=True,
        )

    def skip(self, spec: RunSpec) -> None:
        self.done += 1
        self.console.print(
            f"[dim]skip {spec.label}: already complete (use --force to retrain)[/]", soft_wrap=True
        )

    def abort(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
