"""One run, start to end, as every executor does it: look it up in the store, claim its lease,
train it while a heartbeat renews the lease, and record how it ended.

A run that fails (non-finite loss, an error inside its method) is marked ``failed`` with the
reason and the sweep goes on; an interruption marks it ``interrupted`` and stops the sweep; bad
input (:class:`CalibenchError`) and storage errors (``OSError``) stop the command.

In a multi-process run (calibench/distributed.py) every rank calls :func:`run_one` for the same
spec; rank 0 alone reads and writes the store (status, claim, heartbeat, outcome) and tells the
other ranks what it decided.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from calibench import distributed
from calibench.config import RunSpec
from calibench.store import Claim, Store, read_json
from calibench.train import RunFailed, RunProgress, prepare, train

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
}


def run_one(
    spec: RunSpec,
    store: Store,
    progress: RunProgress | None = None,
    force: bool = False,
    retry_failed: bool = False,
) -> Outcome:
    """Train ``spec`` unless the store says to skip it; never raises for a failed run."""
    main = distributed.is_main()
    progress = progress if main else None
    status = distributed.broadcast_object(store.status(spec) if main else None)
    if status == "running" or (status in ("complete", "failed") and not force):
        if status != "failed" or not retry_failed:
            return _skipped(spec, status, progress)
    p = prepare(spec)
    claim = store.claim(spec, force=force, retry_failed=retry_failed) if main else None
    claim = distributed.broadcast_object(claim)
    if isinstance(claim, str):
        return _skipped(spec, claim, progress)
    try:
        with Heartbeat(store, claim) if main else nullcontext():
            renew = (lambda e: store.renew(claim, e)) if main else None
            metrics = distributed.broadcast_object(train(claim, p, store, progress, renew))
    except RunFailed as exc:
        if main:
            store.fail(claim, exc.reason, exc.epoch)
        if progress:
            progress.fail(spec, f"epoch {exc.epoch}: {exc.reason}" if exc.epoch else exc.reason)
        return Outcome(spec, "failed", reason=exc.reason)
    except BaseException:
        if main:
            store.interrupt(claim)
        raise
    return Outcome(spec, "complete", metrics)


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
