"""What the commands print: the progress of a sweep, its closing summary, and tables of runs.

On a terminal a sweep shows two live bars: the sweep (runs done of all, time left) and the run
in training (batches of the epoch, images/s, time left of the run). Where stdout is not a
terminal (``nohup``, a SLURM log, a pipe) the bars are replaced by one plain line per epoch, so
logs show progress. Times left come from measured epoch times (:class:`SweepClock`).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from calibench.cli.plan import EpochTimes, PlannedRun, SweepClock, run_labels, varying_settings
from calibench.spec import RunSpec

REFRESH_SECONDS = 0.2
"""Least time between two updates of the run bar from batches."""


def duration(seconds: float | None) -> str:
    """``H:MM:SS`` (``-`` when unknown)."""
    return "-" if seconds is None else str(timedelta(seconds=round(seconds)))


class _Epoch:
    """The epoch in training: its number, when it started and the images trained so far."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started = time.perf_counter()
        self.images = 0
        self.step = 0
        self.total = 0
        self.shown = 0.0

    def rate(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        return self.images / elapsed if self.images and elapsed > 0 else None

    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    def guess(self) -> float | None:
        """Seconds of the whole epoch at the rate of its batches so far."""
        elapsed = time.perf_counter() - self.started
        return elapsed / self.fraction() if self.step else None


class RichProgress:
    """Implements :class:`calibench.training.loop.RunProgress` on a rich console for the runs of
    ``planned`` (with the store's measured epoch ``times`` for the first estimates): live bars
    on a terminal, else a plain line per epoch; on both, one line per finished, failed or
    skipped run. Run names carry the settings that vary in the sweep."""

    def __init__(
        self,
        console: Console | None = None,
        planned: list[PlannedRun] | None = None,
        times: EpochTimes | None = None,
    ) -> None:
        self.console = console or Console()
        planned = planned or []
        self.total_runs = max(1, len(planned))
        self.labels = run_labels(p.spec for p in planned)
        self.clock = SweepClock(planned, times)
        self.done = 0
        self.live = self.console.is_terminal
        self._live: tuple[Progress, TaskID] | None = None
        """The live bars, once shown, and the sweep's bar among them."""
        self._run: TaskID | None = None
        self._spec: RunSpec | None = None
        self._epoch = _Epoch(1)

    def label(self, spec: RunSpec) -> str:
        """The run's name: its label and the settings that vary in the sweep."""
        return self.labels.get(spec.run_id, spec.label)

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _bars(self) -> tuple[Progress, TaskID]:
        if self._live is None:
            progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                console=self.console,
                transient=True,
            )
            progress.start()
            self._live = progress, progress.add_task("sweep", total=self.total_runs, info="")
        return self._live

    def _sweep_info(self) -> str:
        left = self.clock.sweep_left(self._spec, self._epoch.fraction(), self._epoch.guess())
        return f"{self.done}/{self.total_runs} runs, sweep ETA {duration(left)}"

    def start(self, spec: RunSpec, first_epoch: int) -> None:
        self._spec, self._epoch = spec, _Epoch(first_epoch)
        self.clock.started(spec, first_epoch)
        resumed = f", resumed at epoch {first_epoch}" if first_epoch > 1 else ""
        name = f"[{self.done + 1}/{self.total_runs}] {self.label(spec)}"
        if not self.live:
            self._say(f"start {name}: {spec.training.epochs} epochs{resumed}")
            return
        bars, sweep = self._bars()
        if self._run is not None:
            bars.remove_task(self._run)
        self._run = bars.add_task(escape(name + resumed), total=None, info="")
        bars.update(sweep, info=self._sweep_info())

    def batch(self, total: int, step: int, images: int) -> None:
        epoch = self._epoch
        epoch.step, epoch.total, epoch.images = step, total, epoch.images + images
        now = time.perf_counter()
        if not self.live or self._run is None or (now - epoch.shown < REFRESH_SECONDS):
            return
        epoch.shown = now
        rate = epoch.rate()
        spec = self._spec
        assert spec is not None, "start() sets the spec with the run's bar"
        left = self.clock.run_left(spec, epoch.fraction(), epoch.guess())
        info = (
            f"epoch {epoch.number}/{spec.training.epochs}, {step}/{total} batches, "
            f"{rate or 0:.0f} img/s, run ETA {duration(left)}"
        )
        bars, sweep = self._bars()
        bars.update(self._run, total=total, completed=step, info=info)
        bars.update(sweep, info=self._sweep_info())

    def epoch(self, row: dict[str, Any]) -> None:
        spec = self._spec
        if spec is None:
            return
        self.clock.epoch_done(spec, row["epoch"], row["seconds"])
        self._epoch = _Epoch(row["epoch"] + 1)
        run_left = self.clock.run_left(spec)
        summary = (
            f"loss {row['loss']:.4f}, val acc {100 * row['val_acc']:.2f}%, "
            f"val ECE {100 * row['val_ece']:.2f}%, {row['seconds']:.1f}s; "
            f"ETA run {duration(run_left)}, sweep {duration(self.clock.sweep_left())}"
        )
        if not self.live:
            self._say(
                f"epoch {row['epoch']}/{spec.training.epochs} [{self.done + 1}/"
                f"{self.total_runs}] {self.label(spec)}: {summary}"
            )
            return
        assert self._run is not None, "start() made the run's bar"
        bars, sweep = self._bars()
        bars.update(self._run, info=f"epoch {row['epoch']}/{spec.training.epochs}: {summary}")
        bars.update(sweep, info=self._sweep_info())

    def _ended(self, spec: RunSpec) -> None:
        self.clock.ended(spec)
        self.done += 1
        self._spec = None
        if not self.live:
            return
        bars, sweep = self._bars()
        if self._run is not None:
            bars.remove_task(self._run)
            self._run = None
        bars.update(sweep, completed=self.done, info=self._sweep_info())

    def finish(self, spec: RunSpec, metrics: dict[str, Any], seconds: float) -> None:
        if self._spec is None or self._spec.run_id != spec.run_id:
            # trained elsewhere (a worker process): its time per epoch is all there is to learn
            epochs = self.clock.to_go.get(spec.run_id) or spec.training.epochs
            self.clock.times.add(spec, [seconds / epochs])
        self._ended(spec)
        sweep = "" if self.live else f"; {self._sweep_info()}"
        self._say(
            f"done {self.label(spec)}: acc {100 * metrics['acc']:.2f}%  "
            f"ECE {100 * metrics['ece']:.2f}%  ECE(TS) {100 * metrics['ece_ts']:.2f}% "
            f"(T={metrics['temperature']:.1f})  {seconds:.1f}s{sweep}"
        )

    def skip(self, spec: RunSpec, reason: str) -> None:
        self._ended(spec)
        text = f"[dim]skip {escape(self.label(spec))}: {escape(reason)}[/]"
        self.console.print(text, soft_wrap=True, highlight=False)

    def fail(self, spec: RunSpec, reason: str) -> None:
        self._ended(spec)
        text = f"[red]failed[/] {escape(self.label(spec))}: {escape(reason)}"
        self.console.print(text, soft_wrap=True, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {escape(message)}", soft_wrap=True)

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        """Take the live bars off the terminal (the printed lines stay)."""
        if self._live is not None:
            self._live[0].stop()
            self._live = None
            self._run = None


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
    """One line per run of a store: status, epochs done, the settings that tell grid runs apart,
    elapsed time of running runs and the error of failed ones."""
    from rich.table import Table

    varying = varying_settings(RunSpec.from_dict(json.loads(r["config"])) for r in rows)
    shown = {k: ", ".join(f"{n}={v}" for n, v in s.items()) for k, s in varying.items()}
    columns = ["status", "method", "dataset", "backbone", "seed", "epoch", "note"]
    if any(shown.values()):
        columns.insert(5, "settings")
    table = Table(title="runs", title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column not in ("note", "settings"))
    for row in rows:
        note = row.get("error") or ""
        if row["status"] == "running":
            note = f"{row.get('owner')}, {time.time() - row['started']:.0f}s since start"
        done = row.get("epoch")
        cells = {
            **row,
            "epoch": f"{done if done is not None else '-'}/{row['epochs']}",
            "settings": shown.get(row["run_id"], ""),
            "note": note,
        }
        table.add_row(*(escape(str(cells[c])) for c in columns))
    _print_wide(table, console)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs")


def _cost_cells(
    plan: PlannedRun, images: dict[tuple[str, int], int | None], times: EpochTimes
) -> tuple[str, str, float | None, int | None]:
    """A run's cost cells (images trained, time) and their values (None when unknown)."""
    spec, epochs = plan.spec, plan.epochs_to_go
    per_run = images.get((spec.dataset, spec.training.split_seed))
    n = None if per_run is None else epochs * per_run
    per_epoch = times.per_epoch(spec)
    seconds = None if per_epoch is None else epochs * per_epoch
    if not epochs:
        return "-", "-", 0.0, 0
    shown = f"{epochs} x {per_run:,} = {n:,}" if n is not None else f"{epochs} x ?"
    return shown, duration(seconds), seconds, n


def print_plan(
    planned: list[PlannedRun],
    console: Console,
    images: dict[tuple[str, int], int | None] | None = None,
    times: EpochTimes | None = None,
    note: str | None = None,
) -> None:
    """One line per run of a selection: its status, what ``calibench run`` would do with it and
    the epochs done; with ``images`` (a dry run), its cost: epochs to go x training images, and
    the time those epochs took in the store's measured runs of its dataset and backbone. Then
    the counts, and ``note`` when given."""
    from rich.table import Table

    labels = run_labels(p.spec for p in planned)
    table = Table(title="runs of the selection", title_justify="left")
    columns = ["status", "action", "epoch", "run"]
    if images is not None:
        columns[3:3] = ["epochs x training images", "time"]
    for column in columns:
        table.add_column(column, no_wrap=column != "run")
    seconds: list[float | None] = []
    total_images = 0
    for plan in planned:
        cells = [plan.status, plan.action, f"{plan.epochs_done}/{plan.spec.training.epochs}"]
        if images is not None:
            shown, when, took, n = _cost_cells(plan, images, times or EpochTimes())
            cells += [shown, when]
            seconds.append(took)
            total_images += n or 0
        note = f" ({plan.note})" if plan.note else ""
        table.add_row(*(escape(str(c)) for c in [*cells, labels[plan.spec.run_id] + note]))
    _print_wide(table, console)
    counts: dict[str, int] = {}
    for plan in planned:
        counts[plan.action] = counts.get(plan.action, 0) + 1
    line = f"{len(planned)} runs: " + ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    if images is not None:
        line += f"; {total_images:,} training images to go; " + _time_summary(seconds)
    for text in (line, f"note: {note}" if note else ""):
        if text:
            console.print(text, highlight=False, markup=False, soft_wrap=True)


def _time_summary(seconds: list[float | None]) -> str:
    known = [s for s in seconds if s is not None]
    unknown = len(seconds) - len(known)
    if not unknown:
        return f"about {duration(sum(known))} at the store's measured epoch times"
    if not known or not sum(known):
        return "no time estimate: the store holds no measured epoch of these datasets/backbones"
    return (
        f"about {duration(sum(known))} for the runs whose dataset/backbone the store has "
        f"measured, plus {unknown} runs it has not"
    )


def _print_wide(table: Any, console: Console) -> None:
    """Print ``table``; where the output is no terminal (a log file), at its natural width
    instead of wrapped into the 80 columns rich assumes there."""
    from rich.measure import Measurement

    if console.is_terminal:
        console.print(table)
        return
    needed = Measurement.get(console, console.options.update_width(1000), table).maximum
    width = max(console.width, needed)
    Console(file=console.file, width=width, quiet=console.quiet, color_system=None).print(table)


def print_metrics(result: dict[str, Any], title: str, console: Console) -> None:
    """The metrics of ``calibench metrics``, in the metric table's order and units (percent
    where the table says so), after temperature scaling too when ``result`` has a temperature,
    then the OOD AUROCs."""
    from rich.table import Table

    from calibench.evaluation.metrics import METRIC_INFO

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "temperature" in result:
        table.add_column(f"after TS (T={result['temperature']:.3g})", justify="right")
    for name, info in METRIC_INFO.items():
        cells = [result[name], *([result[f"{name}_ts"]] if "temperature" in result else [])]
        percent = info.unit == "percent"
        table.add_row(
            f"{name} (%)" if percent else name,
            *[f"{100 * v:.2f}" if percent else f"{v:.4f}" for v in cells],
        )
    console.print(table)
    for key in sorted(k for k in result if k.startswith("ood_")):
        console.print(f"{key}: {result[key]:.4f}", highlight=False)
