"""Where runs execute: in this process, in one worker process per device (e.g. per local GPU),
or as jobs on a SLURM cluster through submitit.

Every executor does the same thing per spec: skip it when the store already holds it complete
(unless forced), otherwise train it, resuming from its last checkpoint if one exists. Workers
and jobs share the store; SQLite serialises their writes to the index.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from calibench.config import RunSpec
from calibench.errors import CalibenchError
from calibench.progress import RichProgress
from calibench.store import Store


def pending_specs(
    specs: list[RunSpec], store: Store, force: bool, progress: RichProgress | None = None
) -> list[RunSpec]:
    """The specs still to train (all of them with ``force``), reporting the skipped ones."""
    todo = []
    for spec in specs:
        if not force and store.is_complete(spec):
            if progress:
                progress.skip(spec)
            continue
        todo.append(spec)
    return todo


def run_local(
    specs: list[RunSpec], store: Store, force: bool = False, progress: RichProgress | None = None
) -> list[dict[str, Any]]:
    """Train ``specs`` one after another in this process."""
    from calibench.train import train_run

    results = []
    for spec in pending_specs(specs, store, force, progress):
        try:
            results.append(train_run(spec, store, progress, fresh=force))
        except BaseException:
            if progress:
                progress.abort()
            raise
    return results


def _train_in_worker(
    spec_dict: dict[str, Any], output: str, plugin_dirs: list[str], fresh: bool
) -> dict:
    """Entry point of a worker process or cluster job: load plugins, train one spec."""
    from calibench.discovery import discover_plugins
    from calibench.train import train_run

    discover_plugins([Path(p) for p in plugin_dirs])
    return train_run(RunSpec.from_dict(spec_dict), Store(Path(output)), fresh=fresh)


_worker_device: str = "cpu"


def _claim_device(devices: Any) -> None:
    global _worker_device
    _worker_device = devices.get()


def _train_on_claimed_device(job: tuple[dict[str, Any], str, list[str], bool]) -> dict:
    spec_dict, output, plugin_dirs, fresh = job
    return _train_in_worker({**spec_dict, "device": _worker_device}, output, plugin_dirs, fresh)


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
    progress: RichProgress | None = None,
) -> list[dict[str, Any]]:
    """Train ``specs`` in one worker process per entry of ``devices`` (``cuda:0``, ``cuda:1``...;
    ``cpu`` entries work too), each worker taking the next pending spec when it is free."""
    from calibench.train import resolve_device

    if not devices:
        raise CalibenchError("the processes executor needs at least one device (--devices).")
    for device in devices:
        resolve_device(device)
    todo = pending_specs(specs, store, force, progress)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for device in devices:
        queue.put(device)
    jobs = [(s.to_dict(), str(store.root), [str(p) for p in plugin_dirs], force) for s in todo]
    by_id = {s.run_id: s for s in todo}
    results = []
    with ctx.Pool(len(devices), initializer=_claim_device, initargs=(queue,)) as pool:
        for metrics in pool.imap_unordered(_train_on_claimed_device, jobs):
            results.append(metrics)
            if progress:
                progress.finish(by_id[metrics["run_id"]], metrics, metrics["train_seconds"])
    return results


def run_slurm(
    specs: list[RunSpec],
    store: Store,
    plugin_dirs: list[Path],
    slurm: dict[str, Any],
    force: bool = False,
    wait: bool = True,
) -> list[Any]:
    """Submit one SLURM job per pending spec with submitit (``pip install calibench[slurm]``).

    ``slurm`` holds submitit's parameters (``timeout_min``, ``gpus_per_node``, ``slurm_partition``
    ...) and optionally ``cluster`` (``slurm``, or ``local``/``debug`` to try a setup without a
    cluster). A job that is pre-empted or times out resumes from its checkpoint when resubmitted."""
    try:
        import submitit
    except ImportError:
        raise CalibenchError(
            "the slurm executor needs submitit: pip install 'calibench[slurm]'."
        ) from None
    params = dict(slurm)
    executor = submitit.AutoExecutor(
        folder=store.root / "slurm" / "%j", cluster=params.pop("cluster", None)
    )
    try:
        executor.update_parameters(**params)
    except (NameError, TypeError, ValueError) as exc:
        raise CalibenchError(f"bad [slurm] settings in benchmark.toml: {exc}") from None
    jobs = []
    with executor.batch():
        for spec in pending_specs(specs, store, force):
            jobs.append(
                executor.submit(
                    _train_in_worker,
                    spec.to_dict(),
                    str(store.root),
                    [str(p) for p in plugin_dirs],
                    force,
                )
            )
    return [job.result() for job in jobs] if wait else jobs
