"""Where runs execute: in this process, in worker processes per device (e.g. per local GPU),
or as jobs on a SLURM cluster through submitit.

Every executor does the same per spec (:func:`calibench.runner.run_one`): skip it when the
store holds it complete, failed or claimed by a live process, otherwise claim and train it,
resuming from its last checkpoint. Workers and jobs share the store; SQLite serialises their
claims. Worker processes die with the command that started them. With ``gpus_per_run`` > 1 a
SLURM job runs one task per process of the run (calibench/distributed.py).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from calibench.config import RunSpec
from calibench.errors import CalibenchError
from calibench.runner import Outcome, run_one
from calibench.store import Store
from calibench.train import RunProgress


def run_local(
    specs: list[RunSpec],
    store: Store,
    force: bool = False,
    progress: RunProgress | None = None,
    retry_failed: bool = False,
) -> list[Outcome]:
    """Train ``specs`` one after another in this process."""
    outcomes = []
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
) -> dict[str, Any]:
    """Entry point of a worker process or cluster job: load plugins, run one spec; returns the
    outcome as a dict (status, metrics, reason). With ``processes`` > 1 this is one task of a
    SLURM job: submitit's TorchDistributedEnvironment puts the rank, world size and master
    address in the environment and the tasks train the spec together."""
    from calibench import distributed
    from calibench.discovery import discover_plugins
    from calibench.train import resolve_device

    discover_plugins([Path(p) for p in plugin_dirs])
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


_worker_device: str = "cpu"


def die_with_parent() -> None:
    """Make this process end when its parent does: PR_SET_PDEATHSIG on Linux, and a watchdog
    thread that notices the parent's exit elsewhere."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _start_worker(devices: Any) -> None:
    global _worker_device
    die_with_parent()
    _worker_device = devices.get()


def _train_on_worker_device(job: tuple[dict[str, Any], str, list[str], bool, bool]) -> dict:
    spec_dict, output, plugin_dirs, force, retry_failed = job
    return _train_in_worker(
        {**spec_dict, "device": _worker_device}, output, plugin_dirs, force, retry_failed
    )


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
    spec when it is free. Several runs per device fill a large GPU with small models."""
    from calibench.train import resolve_device

    if not devices:
        raise CalibenchError("the processes executor needs at least one device (--devices).")
    for device in devices:
        resolve_device(device)
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for device in devices * runs_per_device:
        slots.put(device)
    by_id = {s.run_id: s for s in specs}
    plugins = [str(p) for p in plugin_dirs]
    jobs = [(s.to_dict(), str(store.root), plugins, force, retry_failed) for s in specs]
    outcomes = []
    with ctx.Pool(len(devices) * runs_per_device, _start_worker, (slots,)) as pool:
        for result in pool.imap_unordered(_train_on_worker_device, jobs):
            outcome = _outcome(by_id[result["run_id"]], result)
            outcomes.append(outcome)
            if progress:
                _report(progress, outcome)
    return outcomes


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
    executor = submitit.AutoExecutor(
        folder=store.root / "slurm" / "%j", cluster=params.pop("cluster", None)
    )
    try:
        executor.update_parameters(**params)
    except (NameError, TypeError, ValueError) as exc:
        raise CalibenchError(f"bad [slurm] settings in benchmark.toml: {exc}") from None
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
                )
            )
    if not wait:
        return jobs
    return [_outcome(spec, job.results()[0]) for spec, job in zip(todo, jobs, strict=True)]
