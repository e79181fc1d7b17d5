"""What a sweep would do, read from the store without writing to it: each run's status and
action (``calibench run --dry-run``, ``calibench status`` with a selection), the names that tell
grid runs apart, and time estimates from measured epoch times.

The actions follow the runner's rules (calibench/training/runner.py, docs/reliability.md): a
pending run trains, an interrupted one resumes from its checkpoint, a complete or failed one is
skipped unless ``--force`` (retrain from scratch) or, for a failed one, ``--retry-failed``
(resume), and a run held by another live process is skipped.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.spec import RunSpec, Training
from calibench.store.files import RunDir
from calibench.store.index import DB_NAME, Store


@dataclass
class PlannedRun:
    """One run of a sweep as the store sees it now, and what ``calibench run`` would do."""

    spec: RunSpec
    status: str
    """``pending``, ``running``, ``complete``, ``failed`` or ``interrupted``."""
    action: str
    """``train``, ``resume``, ``retrain`` or ``skip``."""
    epochs_done: int = 0
    note: str = ""
    """The error of a failed run, the owner of a running one."""

    @property
    def epochs_to_go(self) -> int:
        """The epochs the command would train: none for a skipped run, the rest for a resumed
        one, all for a run trained from scratch."""
        if self.action == "skip":
            return 0
        done = self.epochs_done if self.action == "resume" else 0
        return max(0, self.spec.training.epochs - done)


def action_for(status: str, force: bool = False, retry_failed: bool = False) -> str:
    """What ``calibench run`` does with a run of ``status`` (the runner's rules)."""
    if status == "running":
        return "skip"
    if status == "complete":
        return "retrain" if force else "skip"
    if status == "failed":
        return "retrain" if force else ("resume" if retry_failed else "skip")
    if status == "interrupted":
        return "retrain" if force else "resume"
    return "train"


def stored_rows(store: Store) -> dict[str, dict[str, Any]]:
    """The index rows of ``store`` by run id, with their effective status; empty when it has no
    index (nothing is created: a missing index is not rebuilt here)."""
    if not store.db_path.exists():
        return {}
    return {row["run_id"]: row for row in store.runs()}


def plan_runs(
    specs: list[RunSpec], rows: dict[str, dict[str, Any]], force: bool, retry_failed: bool
) -> list[PlannedRun]:
    """Each spec's status in ``rows`` (pending when absent) and the action it would get."""
    planned = []
    for spec in specs:
        row = rows.get(spec.run_id)
        status = row["status"] if row else "pending"
        note = (row.get("error") or "") if row else ""
        if status == "running":
            note = f"trained by {row.get('owner')}" if row else ""
        done = int(row["epoch"]) if row and row.get("epoch") is not None else 0
        planned.append(
            PlannedRun(spec, status, action_for(status, force, retry_failed), done, note)
        )
    return planned


def no_index_note(store: Store) -> str | None:
    """A warning when ``store`` holds run folders but no index, so every run shows as pending
    (``calibench status --rebuild`` indexes the folders)."""
    if store.db_path.exists() or not (store.root / "runs").is_dir():
        return None
    return (
        f"{store.root} has run folders but no {DB_NAME}: every run shows as pending here. "
        f"`calibench status --rebuild --output {store.root}` indexes them."
    )


def varying_settings(specs: Iterable[RunSpec]) -> dict[str, dict[str, Any]]:
    """Run id -> the settings that tell it apart from the sweep's other runs of the same method,
    dataset and backbone: the hyperparameters and the training settings (as
    ``training.<name>``) whose values differ between those runs (a ``--set`` grid, an
    ablation). Empty for a run nothing varies in."""
    groups: dict[tuple[str, str, str], list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.method, spec.dataset, spec.backbone), []).append(spec)
    out: dict[str, dict[str, Any]] = {}
    for group in groups.values():
        settings = [_settings(spec) for spec in group]
        keys = list(dict.fromkeys(k for shown in settings for k in shown))
        varying = [k for k in keys if len({repr(shown.get(k)) for shown in settings}) > 1]
        for spec, shown in zip(group, settings, strict=True):
            out[spec.run_id] = {k: shown.get(k) for k in varying}
    return out


def _settings(spec: RunSpec) -> dict[str, Any]:
    """A run's hyperparameters and its training settings (``training.<name>``)."""
    training = {f"training.{f.name}": getattr(spec.training, f.name) for f in fields(Training)}
    return {**dict(sorted(spec.hparams.items())), **training}


def run_labels(specs: Iterable[RunSpec]) -> dict[str, str]:
    """Run id -> ``method / dataset / backbone / seed N``, followed by the settings that vary
    in the sweep (``(margin=1.0, training.lr=0.05)``), so that grid runs can be told apart."""
    specs = list(specs)
    varying = varying_settings(specs)
    labels = {}
    for spec in specs:
        shown = ", ".join(f"{k}={v}" for k, v in varying.get(spec.run_id, {}).items())
        labels[spec.run_id] = spec.label + (f" ({shown})" if shown else "")
    return labels


def _log_seconds(folder: Path) -> list[float]:
    try:
        with open(folder / RunDir.LOG, newline="") as fh:
            return [float(r["seconds"]) for r in csv.DictReader(fh) if r.get("seconds")]
    except (OSError, ValueError, KeyError, csv.Error):
        return []


class EpochTimes:
    """Measured seconds per epoch, by (method, dataset, backbone) and by (dataset, backbone): a
    run's epoch estimate is the median of its own method's epochs on that dataset and backbone,
    else of every method's there (methods differ in forward passes per step, so the first is
    closer), else unknown."""

    def __init__(self) -> None:
        self._by_method: dict[tuple[str, str, str], list[float]] = {}
        self._by_pair: dict[tuple[str, str], list[float]] = {}

    def add(self, spec: RunSpec, seconds: Iterable[float]) -> None:
        """Record epochs of ``spec`` that took ``seconds`` each."""
        values = [float(s) for s in seconds if float(s) > 0]
        self._by_method.setdefault((spec.method, spec.dataset, spec.backbone), []).extend(values)
        self._by_pair.setdefault((spec.dataset, spec.backbone), []).extend(values)

    def per_epoch(self, spec: RunSpec, rough: bool = False) -> float | None:
        """The estimated seconds of one epoch of ``spec``, or None when nothing comparable
        was measured; ``rough``: else the median epoch of every run measured."""
        candidates = [
            self._by_method.get((spec.method, spec.dataset, spec.backbone)),
            self._by_pair.get((spec.dataset, spec.backbone)),
        ]
        if rough:
            candidates.append([s for values in self._by_pair.values() for s in values])
        for found in candidates:
            if found:
                return statistics.median(found)
        return None

    @classmethod
    def from_store(cls, store: Store, rows: dict[str, dict[str, Any]]) -> EpochTimes:
        """The epoch times in the ``log.csv`` of every indexed run of ``store``."""
        times = cls()
        for row in rows.values():
            spec = RunSpec.from_dict(_config(row))
            times.add(spec, _log_seconds(Path(row["dir"])))
        return times


def _config(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["config"])


def training_images(
    specs: Iterable[RunSpec], rows: dict[str, dict[str, Any]]
) -> dict[tuple[str, int], int | None]:
    """(dataset, split seed) -> the number of training images: from a stored run's split
    file when the store has one, else by loading the dataset (None when it cannot be read
    here)."""
    known: dict[tuple[str, int], int | None] = {}
    for row in rows.values():
        spec = RunSpec.from_dict(_config(row))
        key = (spec.dataset, spec.training.split_seed)
        if known.get(key) is None:
            known[key] = _stored_split_size(Path(row["dir"]))
    for spec in specs:
        key = (spec.dataset, spec.training.split_seed)
        if known.get(key) is None:
            known[key] = _loaded_split_size(spec)
    return known


def _stored_split_size(folder: Path) -> int | None:
    try:
        with np.load(folder / RunDir.SPLIT) as split:
            return int(len(split["train_indices"]))
    except (OSError, KeyError, ValueError):
        return None


def _loaded_split_size(spec: RunSpec) -> int | None:
    from calibench.data import load_dataset

    try:
        data = load_dataset(spec.dataset, spec.data_root, False, spec.training.split_seed)
    except CalibenchError:
        return None
    return len(data.train)


class SweepClock:
    """The time left of a sweep and of its runs: the epochs each run has to go times its epoch
    estimate (:class:`EpochTimes`, improved by every epoch measured here; a run whose like was
    never measured counts with the median of all measured epochs). Within an epoch, the part
    already done is taken off."""

    def __init__(self, planned: list[PlannedRun], times: EpochTimes | None = None) -> None:
        self.times = times or EpochTimes()
        self.specs = {p.spec.run_id: p.spec for p in planned}
        self.to_go = {p.spec.run_id: p.epochs_to_go for p in planned}

    def started(self, spec: RunSpec, first_epoch: int) -> None:
        """``spec`` trains from ``first_epoch``."""
        self.specs[spec.run_id] = spec
        self.to_go[spec.run_id] = spec.training.epochs - first_epoch + 1

    def epoch_done(self, spec: RunSpec, epoch: int, seconds: float) -> None:
        """Epoch ``epoch`` of ``spec`` took ``seconds``."""
        self.times.add(spec, [seconds])
        self.to_go[spec.run_id] = spec.training.epochs - epoch

    def ended(self, spec: RunSpec) -> None:
        """``spec`` finished, failed or was skipped: nothing of it is left."""
        self.to_go[spec.run_id] = 0

    def run_left(
        self, spec: RunSpec, done: float = 0.0, epoch_guess: float | None = None
    ) -> float | None:
        """Seconds left of ``spec`` with the fraction ``done`` of its current epoch behind it;
        ``epoch_guess`` (seconds of an epoch from the current batch rate) stands in while no
        epoch of its kind was measured. None when nothing is known."""
        per = self.times.per_epoch(spec) or epoch_guess or self.times.per_epoch(spec, rough=True)
        if per is None:
            return None
        return max(0.0, per * (self.to_go.get(spec.run_id, 0) - done))

    def sweep_left(
        self, current: RunSpec | None = None, done: float = 0.0, guess: float | None = None
    ) -> float | None:
        """Seconds left of every unfinished run of the sweep (the current one as in
        :meth:`run_left`); None when no epoch time is known yet."""
        total, known = 0.0, not any(to_go > 0 for to_go in self.to_go.values())
        for run_id, to_go in self.to_go.items():
            if to_go <= 0:
                continue
            spec = self.specs[run_id]
            is_current = current is not None and run_id == current.run_id
            left = self.run_left(spec, done, guess) if is_current else self.run_left(spec)
            if left is not None:
                total, known = total + left, True
        return total if known else None
