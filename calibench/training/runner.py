"""One run, start to end, as every executor does it: look it up in the store, claim its lease,
train it while a heartbeat renews the lease, and record how it ended.

A run that fails (non-finite loss, an error inside its method, an OSError of its own, any
unexpected error while it is built, trained or evaluated) is marked ``failed`` with the reason
and the sweep goes on; an interruption (Ctrl-C, SIGTERM) marks it ``interrupted`` and stops the
sweep; bad input (:class:`CalibenchError`) and a failed write of the results folder
(:class:`~calibench.store.files.StorageError`, a CalibenchError) stop the command. The runner,
not the trainer, stores the result. docs/reliability.md states the rules.

In a multi-process run (calibench/training/distributed.py) every rank calls :func:`run_one`
for the same spec; rank 0 alone reads and writes the store (status, claim, heartbeat,
outcome) and tells the other ranks what it decided.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from calibench.errors import CalibenchError
from calibench.spec import RunSpec
from calibench.store.files import RunDir
from calibench.store.index import Claim, Store
from calibench.store.lease import LeaseLost, heartbeat_seconds
from calibench.training import distributed
from calibench.training.loop import RunFailed, RunProgress, RunResult, prepare, train

STOPS_THE_COMMAND = (CalibenchError,)
"""Errors that are not one run's fault: bad input and an unusable results folder
(:class:`~calibench.store.files.StorageError`). Any other error inside a run, an OSError of the
method or the data included, fails that run only."""


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

    def __init__(self, store: Store, claim: Claim, interval: float | None = None) -> None:
        self.store, self.claim = store, claim
        self.interval = heartbeat_seconds() if interval is None else interval
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
    claim: Claim | str | None = None
    try:
        claim = store.claim(spec, force=force, retry_failed=retry_failed) if main else None
        claim = distributed.broadcast_object(claim)
        if isinstance(claim, str):
            return _skipped(spec, claim, progress)
        assert claim is not None
        return _train_claimed(claim, p, store, progress, failure)
    except BaseException:
        if isinstance(claim, Claim):
            _release_quietly(store, claim)
        raise
    finally:
        if isinstance(claim, Claim):
            claim.close()


def _train_claimed(
    claim: Claim,
    p: Any,
    store: Store,
    progress: RunProgress | None,
    failure: RunFailed | None,
) -> Outcome:
    """Train and store a claimed run and record how it ended, except an interruption or an
    error that stops the command, which the caller records."""
    main, started = distributed.is_main(), time.perf_counter()
    try:
        if failure:
            raise failure
        with Heartbeat(store, claim) if main else nullcontext():
            on_epoch = partial(_epoch_done, store, claim) if main else None
            result = train(claim, p, progress, on_epoch)
            if isinstance(result, RunResult):
                store.finish(claim, result.metrics, result.logits)
        metrics = distributed.broadcast_object(result.metrics if result else None)
        assert metrics is not None, "rank 0's train returns a result"
    except LeaseLost:
        return _skipped(claim.spec, "taken over", progress)
    except RunFailed as exc:
        return _failed(store, claim, exc, progress)
    except STOPS_THE_COMMAND:
        raise
    except (Exception, SystemExit) as exc:
        return _failed(store, claim, _unexpected(exc, "while training"), progress)
    if progress:
        progress.finish(claim.spec, metrics, time.perf_counter() - started)
    return Outcome(claim.spec, "complete", metrics)


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
        try:
            store.fail(claim, exc.reason, exc.epoch, details)
        except LeaseLost:
            return _skipped(claim.spec, "taken over", progress)
    reason = f"epoch {exc.epoch}: {exc.reason}" if exc.epoch else exc.reason
    if progress:
        progress.fail(claim.spec, reason)
    return Outcome(claim.spec, "failed", reason=reason)


def _release_quietly(store: Store, claim: Claim) -> None:
    """Mark an interrupted run so; a failure to do so (the store itself may be what failed, or
    the lease was lost) must not hide the error that stopped the run, and the lease dies with
    this process."""
    if not distributed.is_main():
        return
    try:
        store.interrupt(claim)
    except (CalibenchError, OSError, LeaseLost):
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
        return RunDir(store.run_dir(spec)).read_json(RunDir.METRICS)
    raise RunFailed(outcome.reason)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, so that the run in progress is marked interrupted
    as after Ctrl-C."""


TERMINATED_EXIT = 128 + signal.SIGTERM
"""The exit status of a command ended by SIGTERM, as a shell reports a process killed by it."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def terminate_as_interrupt(message: str | None = None) -> Iterator[None]:
    """While inside, SIGTERM interrupts like Ctrl-C (the run in progress is marked interrupted);
    then the command exits with :data:`TERMINATED_EXIT` after printing ``message``. A no-op off
    the main thread, where no signal handler can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except Terminated:
        if message:
            print(message, file=sys.stderr, flush=True)
        raise SystemExit(TERMINATED_EXIT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
