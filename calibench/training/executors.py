"""Where runs execute: in this process, in worker processes per device (e.g. per local GPU),
or as jobs on a SLURM cluster through submitit.

Every executor does the same per spec (:func:`calibench.training.runner.run_one`): skip it when the
store holds it complete, failed or claimed by a live process, otherwise claim and train it,
resuming from its last checkpoint. Workers and jobs share the store; SQLite serialises their
claims. Worker processes die with the command that started them; they ignore the terminal's
Ctrl-C, blocked from their start (the command stops them, so that one message, not a traceback
per worker, tells of it).
SIGTERM stops a command as Ctrl-C does, marking the run in progress interrupted. With
``gpus_per_run`` > 1 a SLURM job runs one task per process of the run
(calibench/training/distributed.py).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from calibench.data import declarations, redeclare
from calibench.errors import CalibenchError
from calibench.spec import RunSpec
from calibench.store.index import Store
from calibench.store.lease import owner_id
from calibench.training.loop import RunProgress
from calibench.training.runner import Outcome, run_one, terminate_as_interrupt

TERMINATED = (
    "calibench: terminated (SIGTERM). Finished epochs are saved; run the same command again to "
    "resume."
)


def run_local(
    specs: list[RunSpec],
    store: Store,
    force: bool = False,
    progress: RunProgress | None = None,
    retry_failed: bool = False,
) -> list[Outcome]:
    """Train ``specs`` one after another in this process."""
    outcomes = []
    with terminate_as_interrupt(TERMINATED):
        for spec in specs:
            try:
                outcomes.append(run_one(spec, store, progress, force, retry_failed))
            except BaseException:
                if progress:
                    progress.abort()
                raise
    return outcomes


def _train_in_worker(
    spec_dict: dict[str, Any],
    output: str,
    plugin_dirs: list[str],
    force: bool,
    retry_failed: bool = False,
    processes: int = 1,
    declared: list | None = None,
) -> dict[str, Any]:
    """Entry point of a worker process or cluster job: load plugins, run one spec; returns the
    outcome as a dict (status, metrics, reason). With ``processes`` > 1 this is one task of a
    SLURM job: submitit's TorchDistributedEnvironment puts the rank, world size and master
    address in the environment and the tasks train the spec together."""
    from calibench.device import resolve_device
    from calibench.plugins import discover_plugins
    from calibench.training import distributed

    discover_plugins([Path(p) for p in plugin_dirs])
    redeclare(declared or [])
    spec = RunSpec.from_dict(spec_dict)
    if processes > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(overwrite=True)
    with distributed.process_group(resolve_device(spec.device)):
        outcome = run_one(spec, Store(Path(output)), force=force, retry_failed=retry_failed)
    return {
        "run_id": spec.run_id,
        **outcome.metrics,
        "status": outcome.status,
        "reason": outcome.reason,
    }


def die_with_parent(parent: int | None = None) -> None:
    """Make this process end when its parent (process ``parent``, by default the current one)
    does: PR_SET_PDEATHSIG on Linux, a check that the parent did not die before it was set, and
    a watchdog thread that notices the parent's exit elsewhere."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _WorkerProgress:
    """A worker's progress: warnings go to stderr; the parent reports each outcome."""

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _worker_main(
    conn: Connection,
    device: str,
    output: str,
    plugin_dirs: list[str],
    force: bool,
    retry_failed: bool,
    parent: int,
    declared: list | None = None,
) -> None:
    """A worker process: train each spec the parent sends on ``device`` until it sends None;
    an error that stops the command is sent back for the parent to raise. SIGTERM (the parent
    stopping it) interrupts the run in progress, which is marked so."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        signal.signal(signal.SIGTERM, _interrupt_worker)
        from calibench.plugins import discover_plugins

        discover_plugins([Path(p) for p in plugin_dirs])
        redeclare(declared or [])
        store = Store(Path(output))
        while (job := conn.recv()) is not None:
            spec = RunSpec.from_dict({**job, "device": device})
            outcome = run_one(spec, store, _WorkerProgress(), force, retry_failed)
            conn.send(("outcome", outcome.status, outcome.metrics, outcome.reason))
    except (EOFError, KeyboardInterrupt):
        return
    except (CalibenchError, OSError) as exc:
        try:
            conn.send(("error", exc))
        except Exception:
            conn.send(("error", CalibenchError(str(exc))))
    except BaseException as exc:
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))


def _interrupt_worker(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _terminal_interrupts_held() -> Iterator[None]:
    """SIGINT is blocked while inside, and processes started inside inherit the block: the
    terminal's Ctrl-C reaches the whole process group, and a worker still importing would print
    a traceback. A worker ignores SIGINT once started (the parent stops its workers itself,
    :func:`_stop`); a Ctrl-C that reached the parent meanwhile is delivered on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    resource_tracker.ensure_running()  # its first start unblocks SIGINT; start it before
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    device: str
    spec: RunSpec | None = None


def visible_gpus() -> list[str]:
    """``cuda:0``, ``cuda:1``... for every visible GPU; an error when there is none."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise CalibenchError(
            "the processes executor found no GPU. Name the devices with --devices "
            "(e.g. --devices cpu,cpu) or use --executor local."
        )
    return [f"cuda:{i}" for i in range(count)]


def run_processes(
    specs: list[RunSpec],
    store: Store,
    devices: list[str],
    plugin_dirs: list[Path],
    force: bool = False,
    progress: RunProgress | None = None,
    retry_failed: bool = False,
    runs_per_device: int = 1,
) -> list[Outcome]:
    """Train ``specs`` in ``runs_per_device`` worker processes per entry of ``devices``
    (``cuda:0``, ``cuda:1``...; ``cpu`` entries work too), each worker taking the next pending
    spec when it is free. Several runs per device fill a large GPU with small models.

    A worker that dies mid-run (killed, out of memory, a crash in native code) fails that run
    with the reason and is replaced; the workers die with this process."""
    from calibench.device import resolve_device

    if not devices:
        raise CalibenchError("the processes executor needs at least one device (--devices).")
    for device in devices:
        resolve_device(device)
    ctx = mp.get_context("spawn")
    plugins = [str(p) for p in plugin_dirs]
    settings = (str(store.root), plugins, force, retry_failed, os.getpid(), declarations())

    def start(device: str) -> _Worker:
        parent_end, child_end = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child_end, device, *settings), daemon=True)
        with _terminal_interrupts_held():
            process.start()
        child_end.close()
        return _Worker(process, parent_end, device)

    with terminate_as_interrupt(TERMINATED):
        return _dispatch(specs, store, start, devices * runs_per_device, progress)


def _dispatch(
    specs: list[RunSpec],
    store: Store,
    start: Any,
    slots: list[str],
    progress: RunProgress | None,
) -> list[Outcome]:
    """Hand ``specs`` to workers, one started per slot (a device), as each gets free."""
    todo = list(reversed(specs))
    workers = [start(d) for d in slots[: len(specs)]]
    outcomes: list[Outcome] = []
    try:
        while todo or any(w.spec for w in workers):
            for worker in workers:
                if worker.spec is None and todo:
                    worker.spec = todo.pop()
                    try:
                        worker.conn.send(worker.spec.to_dict())
                    except OSError:
                        pass  # a dead worker: its sentinel tells below
            busy = [w for w in workers if w.spec is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                outcome = _receive(worker, store)
                outcomes.append(outcome)
                if progress:
                    _report(progress, outcome)
                worker.spec = None
                if outcome.reason.startswith(WORKER_DIED):
                    _stop([worker], graceful=False)
                    workers.remove(worker)
                    if todo:
                        workers.append(start(worker.device))
    except BaseException:
        if progress:
            progress.abort()
        _stop(workers, graceful=False)
        raise
    _stop(workers, graceful=True)
    return outcomes


WORKER_DIED = "its worker process died"


def _receive(worker: _Worker, store: Store) -> Outcome:
    """The outcome a worker sends for its spec; a worker that died instead fails the run."""
    spec = worker.spec
    assert spec is not None
    message = None
    try:
        if worker.conn.poll():
            message = worker.conn.recv()
    except (EOFError, OSError):
        message = None
    if message is not None and message[0] == "outcome":
        _, status, metrics, reason = message
        return Outcome(spec, status, metrics if status == "complete" else {}, reason)
    if message is not None and message[0] == "error":
        raise message[1]
    if message is not None:
        reason = f"{WORKER_DIED} on {message[1]}"
    else:
        worker.process.join(10)
        code = worker.process.exitcode
        how = (
            f"signal {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        reason = f"{WORKER_DIED} ({how}; out of memory, or a crash in native code?)"
    store.fail_dead_owner(spec, owner_id(worker.process.pid), reason)
    return Outcome(spec, "failed", reason=reason)


def _stop(workers: list[_Worker], graceful: bool) -> None:
    """End the workers: ``graceful`` asks idle ones to exit; otherwise SIGTERM lets a training
    worker mark its run interrupted, and SIGKILL ends whatever still runs after a grace time."""
    for worker in workers:
        try:
            if graceful:
                worker.conn.send(None)
            elif worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 10.0
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()


def _outcome(spec: RunSpec, result: dict[str, Any]) -> Outcome:
    status, reason = result.pop("status"), result.pop("reason")
    return Outcome(spec, status, result if status == "complete" else {}, reason)


def _report(progress: RunProgress, outcome: Outcome) -> None:
    if outcome.status == "complete":
        progress.finish(outcome.spec, outcome.metrics, outcome.metrics["train_seconds"])
    elif outcome.status == "failed":
        progress.fail(outcome.spec, outcome.reason)
    else:
        progress.skip(outcome.spec, outcome.reason)


def run_slurm(
    specs: list[RunSpec],
    store: Store,
    plugin_dirs: list[Path],
    slurm: dict[str, Any],
    force: bool = False,
    wait: bool = True,
    retry_failed: bool = False,
    gpus_per_run: int = 1,
) -> list[Any]:
    """Submit one SLURM job per pending spec with submitit (``pip install calibench[slurm]``).

    ``slurm`` holds submitit's parameters (``timeout_min``, ``gpus_per_node``, ``slurm_partition``
    ...) and optionally ``cluster`` (``slurm``, or ``local``/``debug`` to try a setup without a
    cluster). A job that is pre-empted or times out resumes from its checkpoint when resubmitted.
    ``gpus_per_run`` > 1 trains each run with that many tasks on one node (``tasks_per_node``;
    ``gpus_per_node`` too unless it is 0, for CPU processes), one GPU each."""
    try:
        import submitit
    except ImportError:
        raise CalibenchError(
            "the slurm executor needs submitit: pip install 'calibench[slurm]'."
        ) from None
    params = dict(slurm)
    if gpus_per_run > 1:
        params["tasks_per_node"] = gpus_per_run
        if params.get("gpus_per_node", 0):
            params["gpus_per_node"] = gpus_per_run
    cluster = params.pop("cluster", None)
    with tempfile.TemporaryDirectory() as scratch:
        _slurm_executor(submitit, Path(scratch), cluster, params)
    executor = _slurm_executor(submitit, store.root / "slurm" / "%j", cluster, params)
    wanted = {"pending", "interrupted"} | ({"failed"} if retry_failed else set())
    todo = [s for s in specs if force or store.status(s) in wanted]
    jobs = []
    with executor.batch():
        for spec in todo:
            jobs.append(
                executor.submit(
                    _train_in_worker,
                    spec.to_dict(),
                    str(store.root),
                    [str(p) for p in plugin_dirs],
                    force,
                    retry_failed,
                    gpus_per_run,
                    declarations(),
                )
            )
    if not wait:
        return jobs
    return [_outcome(spec, job.results()[0]) for spec, job in zip(todo, jobs, strict=True)]


def _slurm_executor(submitit: Any, folder: Path, cluster: str | None, params: dict) -> Any:
    """A submitit executor logging to ``folder`` with ``params``; bad parameters are one
    message. Tried first on a scratch folder, so that a rejected command creates nothing."""
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    try:
        executor.update_parameters(**params)
    except (NameError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise CalibenchError(f"bad [slurm] settings in benchmark.toml: {reason}") from None
    return executor
