"""One run, start to end, as every executor does it: look it up in the store, claim its lease,
train it while a heartbeat renews the lease, and record how it ended.

A run that fails (non-finite loss, an error inside its method, any unexpected error while it is
built, trained or evaluated) is marked ``failed`` with the reason and the sweep goes on; an
interruption marks it ``interrupted`` and stops the sweep; bad input (:class:`CalibenchError`)
and storage errors (``OSError``) stop the command. docs/reliability.md states the rules.

In a multi-process run (calibench/training/distributed.py) every rank calls :func:`run_one`
for the same spec; rank 0 alone reads and writes the store (status, claim, heartbeat,
outcome) and tells the other ranks what it decided.
"""

from __future__ import annotations

import threading
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from calibench.errors import CalibenchError
from calibench.spec import RunSpec
from calibench.store.files import read_json, write_text
from calibench.store.index import Claim, Store
from calibench.training import distributed
from calibench.training.loop import RunFailed, RunProgress, prepare, train

STOPS_THE_COMMAND = (CalibenchError, OSError)
"""Errors that are not one run's fault: bad input and an unusable results folder."""

HEARTBEAT_SECONDS = 30.0


@dataclass
class Outcome:
    """How one run of a sweep ended: ``complete``, ``failed`` or ``skipped`` (with why)."""

    spec: RunSpec
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class Heartbeat:
    """Renews a claim's lease every ``interval`` seconds from a daemon thread while a run trains,
    so other commands see the run as held by a live process."""

    def __init__(self, store: Store, claim: Claim, interval: float = HEARTBEAT_SECONDS) -> None:
        self.store, self.claim, self.interval = store, claim, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.renew(self.claim)
            except Exception:
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


SKIP_REASONS = {
    "complete": "already complete (use --force to retrain)",
    "failed": "failed before (use --retry-failed or --force)",
    "running": "being trained by another live process",
    "taken over": "its lease went stale and another process took it over",
}


def run_one(
    spec: RunSpec,
    store: Store,
    progress: RunProgress | None = None,
    force: bool = False,
    retry_failed: bool = False,
) -> Outcome:
    """Train ``spec`` unless the store says to skip it; never raises for a failed run (only
    for bad input, an unusable results folder and an interruption)."""
    main = distributed.is_main()
    progress = progress if main else None
    status = distributed.broadcast_object(store.status(spec, thorough=True) if main else None)
    if status == "running" or (status in ("complete", "failed") and not force):
        if status != "failed" or not retry_failed:
            return _skipped(spec, status, progress)
    damage = store.damage(spec) if main else None
    if damage and progress:
        progress.warn(f"{spec.label}: its stored result is damaged ({damage}); recomputing it")
    failure: RunFailed | None = None
    try:
        p = prepare(spec)
    except (*STOPS_THE_COMMAND, KeyboardInterrupt):
        raise
    except (Exception, SystemExit) as exc:
        failure = _unexpected(exc, "while building the run")
    claim = store.claim(spec, force=force, retry_failed=retry_failed) if main else None
    claim = distributed.broadcast_object(claim)
    if isinstance(claim, str):
        return _skipped(spec, claim, progress)
    try:
        if failure:
            raise failure
        with Heartbeat(store, claim) if main else nullcontext():
            on_epoch = partial(_epoch_done, store, claim) if main else None
            metrics = distributed.broadcast_object(train(claim, p, store, progress, on_epoch))
    except LeaseLost:
        return _skipped(spec, "taken over", progress)
    except RunFailed as exc:
        return _failed(store, claim, exc, progress)
    except (*STOPS_THE_COMMAND, KeyboardInterrupt):
        _release_quietly(store, claim)
        raise
    except (Exception, SystemExit) as exc:
        return _failed(store, claim, _unexpected(exc, "while training"), progress)
    except BaseException:
        _release_quietly(store, claim)
        raise
    return Outcome(spec, "complete", metrics)


class LeaseLost(Exception):
    """This process's lease of a run went stale and another process took the run over."""


def _epoch_done(store: Store, claim: Claim, epoch: int) -> None:
    if not store.renew(claim, epoch):
        raise LeaseLost(claim.spec.run_id)


def _unexpected(exc: BaseException, when: str) -> RunFailed:
    failure = RunFailed(f"{type(exc).__name__} {when}: {exc}", getattr(exc, "epoch", None))
    failure.details = "".join(traceback.format_exception(exc))
    return failure


def _failed(store: Store, claim: Claim, exc: RunFailed, progress: RunProgress | None) -> Outcome:
    """Record a failed run (with the traceback of an unexpected error in ``error.txt``)."""
    details = getattr(exc, "details", None) or (
        "".join(traceback.format_exception(exc.__cause__)) if exc.__cause__ else None
    )
    if distributed.is_main():
        if details:
            write_text(claim.dir / "error.txt", details)
        store.fail(claim, exc.reason, exc.epoch)
    reason = f"epoch {exc.epoch}: {exc.reason}" if exc.epoch else exc.reason
    if progress:
        progress.fail(claim.spec, reason)
    return Outcome(claim.spec, "failed", reason=reason)


def _release_quietly(store: Store, claim: Claim) -> None:
    """Mark an interrupted run so; a failure to do so (the store itself may be what failed)
    must not hide the error that stopped the run, and the lease dies with this process."""
    if not distributed.is_main():
        return
    try:
        store.interrupt(claim)
    except (CalibenchError, OSError):
        pass


def _skipped(spec: RunSpec, status: str, progress: RunProgress | None) -> Outcome:
    reason = SKIP_REASONS[status]
    if progress:
        progress.skip(spec, reason)
    return Outcome(spec, "skipped", reason=reason)


def train_run(spec: RunSpec, store: Store, progress: RunProgress | None = None) -> dict[str, Any]:
    """Train one run in this process (or find it complete) and return its metrics; a failed run
    raises :class:`RunFailed` (the Python API's form of :func:`run_one`)."""
    outcome = run_one(spec, store, progress)
    if outcome.status == "complete":
        return outcome.metrics
    if store.status(spec) == "complete":
        return read_json(store.run_dir(spec) / "metrics.json")
    raise RunFailed(outcome.reason)
