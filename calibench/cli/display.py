"""Rich progress display: a bar per run (epoch, loss, validation accuracy) and a line per
finished run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from calibench.spec import RunSpec


class RichProgress:
    """Implements :class:`calibench.training.loop.RunProgress` on a rich console: a bar while a run
    trains (on a terminal only), one line per finished, failed or skipped run."""

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
            f"[{self.done + 1}/{self.total_runs}] {escape(spec.label)}{resumed}",
            total=spec.training.epochs,
            completed=first_epoch - 1,
            status="",
        )

    def batch(self, total: int, step: int, images: int) -> None:
        pass

    def epoch(self, row: dict[str, Any]) -> None:
        if self._progress is not None:
            status = f"loss {row['loss']:.3f}  val acc {100 * row['val_acc']:.1f}%"
            self._progress.update(self._task, completed=row["epoch"], status=status)

    def finish(self, spec: RunSpec, metrics: dict[str, Any], seconds: float) -> None:
        self._stop()
        self.done += 1
        self.console.print(
            f"[green]done[/] {escape(spec.label)}: acc {100 * metrics['acc']:.2f}%  "
            f"ECE {100 * metrics['ece']:.2f}%  ECE(TS) {100 * metrics['ece_ts']:.2f}% "
            f"(T={metrics['temperature']:.1f})  {seconds:.1f}s",
            soft_wrap=True,
        )

    def skip(self, spec: RunSpec, reason: str) -> None:
        self.done += 1
        self.console.print(f"[dim]skip {escape(spec.label)}: {escape(reason)}[/]", soft_wrap=True)

    def fail(self, spec: RunSpec, reason: str) -> None:
        self._stop()
        self.done += 1
        self.console.print(f"[red]failed[/] {escape(spec.label)}: {escape(reason)}", soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {escape(message)}", soft_wrap=True)

    def abort(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_outcomes(outcomes: list[Any], console: Console) -> int:
    """The sweep's closing summary; returns the command's exit code: 1 when a run of the sweep
    failed, now or in an earlier command (then skipped), else 0 (docs/reliability.md)."""
    from calibench.training.runner import SKIP_REASONS

    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
    failed = [o for o in outcomes if o.status == "failed"]
    before = [o for o in outcomes if o.reason == SKIP_REASONS["failed"]]
    if before:
        summary += f" ({len(before)} of them failed before)"
    console.print(f"sweep: {summary}", highlight=False, markup=False, soft_wrap=True)
    for outcome in failed:
        console.print(
            f"failed {outcome.spec.label}: {outcome.reason}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if failed or before:
        console.print(
            "failed runs are skipped on reruns; `calibench run ... --retry-failed` resumes them "
            "and --force retrains them from scratch.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    return 1 if failed or before else 0


def print_status(rows: list[dict[str, Any]], console: Console) -> None:
    """One line per run of a store: status, epochs done, elapsed time of running runs and the
    error of failed ones."""
    import time

    from rich.table import Table

    table = Table(title="runs", title_justify="left")
    for column in ("status", "method", "dataset", "backbone", "seed", "epoch", "note"):
        table.add_column(column, no_wrap=column != "note")
    for row in rows:
        note = row.get("error") or ""
        if row["status"] == "running":
            note = f"{row.get('owner')}, {time.time() - row['started']:.0f}s since start"
        done = row.get("epoch")
        table.add_row(
            *(
                escape(str(v))
                for v in (
                    row["status"],
                    row["method"],
                    row["dataset"],
                    row["backbone"],
                    row["seed"],
                    f"{done if done is not None else '-'}/{row['epochs']}",
                    note,
                )
            )
        )
    console.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs")
