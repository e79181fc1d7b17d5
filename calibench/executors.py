"""Where runs execute: in this process, or as jobs on a SLURM cluster through submitit.

Every executor does the same thing per spec: skip it when the store already holds it complete
(unless forced), otherwise train it, resuming from its last checkpoint if one exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibench.config import RunSpec
from calibench.errors import CalibenchError
from calibench.progress import RichProgress
from calibench.store import Store


def run_local(
    specs: list[RunSpec], store: Store, force: bool = False, progress: RichProgress | None = None
) -> list[dict[str, Any]]:
    """Train ``specs`` one after another in this process."""
    from calibench.train import train_run

    results = []
    for spec in specs:
        if not force and store.is_complete(spec):
            if progress:
                progress.skip(spec)
            continue
        if force:
            store.reset(spec)
        try:
            results.append(train_run(spec, store, progress))
        except BaseException:
            if progress:
                progress.abort()
            raise
    return results


def _train_in_job(spec_dict: dict[str, Any], output: str, plugin_dirs: list[str]) -> dict:
    from calibench.registry import discover_plugins
    from calibench.train import train_run

    discover_plugins([Path(p) for p in plugin_dirs])
    spec = RunSpec.from_dict(spec_dict)
    return train_run(spec, Store(Path(output)))


def run_slurm(
    specs: list[RunSpec],
    store: Store,
    plugin_dirs: list[Path],
    slurm: dict[str, Any],
    force: bool = False,
    wait: bool = True,
) -> list[Any]:
    """Submit one SLURM job per pending spec with submitit (``pip install calibench[slurm]``);
    ``slurm`` holds submitit's ``slurm_*`` parameters (partition, gpus_per_node, timeout_min...).
    A job that is pre-empted or times out resumes from its checkpoint when resubmitted."""
    try:
        import submitit
    except ImportError:
        raise CalibenchError(
            "the slurm executor needs submitit: pip install 'calibench[slurm]'."
        ) from None
    pending = [s for s in specs if force or not store.is_complete(s)]
    if force:
        for spec in pending:
            store.reset(spec)
    executor = submitit.AutoExecutor(folder=store.root / "slurm" / "%j")
    executor.update_parameters(**slurm)
    jobs = []
    with executor.batch():
        for spec in pending:
            jobs.append(
                executor.submit(
                    _train_in_job, spec.to_dict(), str(store.root), [str(p) for p in plugin_dirs]
                )
            )
    return [job.result() for job in jobs] if wait else jobs
