"""The run folders of a results folder as a whole: finding them, giving a claim a folder of its
own, and swapping a retrained attempt into place (docs/reliability.md).

A claim's folder is new: whatever stood at its path (the folder of a claim whose lease died, a
damaged result, a stray link) is first renamed aside, so a process that lost its lease keeps
writing, through its handle, into the folder set aside and never into the new one."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from calibench.spec import RunSpec
from calibench.store.files import RunDir, read_json, remove_tree
from calibench.store.lease import owner_alive
from calibench.store.schema import STATUSES, index_columns

RUNS_DIR = "runs"
ATTEMPT_SUFFIX = ".attempt"
"""``<run folder>.attempt`` holds the retrain (``--force``) of a complete run."""
OLD_SUFFIX = ".old"
"""``<run folder>.old`` holds a complete result while its retrain is swapped in."""
ASIDE_MARK = ".aside-"
"""A folder set aside by a claim is named ``<folder>.aside-<token>`` until it is removed."""


def attempt_of(path: Path) -> Path:
    """The attempt folder beside the run folder ``path``."""
    return path.with_name(path.name + ATTEMPT_SUFFIX)


def old_of(path: Path) -> Path:
    """Where the run folder ``path`` waits while a retrained attempt is swapped in."""
    return path.with_name(path.name + OLD_SUFFIX)


def run_folders(root: Path) -> list[Path]:
    """Every run folder under ``root``: attempts, swapped-out and set-aside folders and links
    excluded."""
    return [
        p.parent
        for p in sorted((root / RUNS_DIR).glob(f"*/*/*/*/{RunDir.CONFIG}"))
        if not p.parent.name.endswith((ATTEMPT_SUFFIX, OLD_SUFFIX))
        and ASIDE_MARK not in p.parent.name
        and not p.parent.is_symlink()
    ]


def take_folder(folder: Path, token: str, inherit: bool) -> tuple[int, Path | None]:
    """Make ``folder`` a new, empty folder of the claim ``token`` and open a handle on it.
    Whatever stood there is set aside (a link or a file is removed, never followed) and, with
    ``inherit``, its checkpoints come along (as links). Returns the handle and the folder set
    aside, for the caller to remove once the claim is committed. Raises OSError."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stray in folder.parent.glob(f"{folder.name}{ASIDE_MARK}*"):
        remove_tree(stray)
    aside = None
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        aside = folder.with_name(f"{folder.name}{ASIDE_MARK}{token}")
        os.replace(folder, aside)
    os.mkdir(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if aside is not None and inherit:
            RunDir(folder, dir_fd=fd).adopt(aside, RunDir.CHECKPOINTS)
    except BaseException:
        os.close(fd)
        raise
    return fd, aside


def swap_in(attempt: Path, path: Path) -> Path:
    """Put a completed attempt in the place of the run folder ``path``; returns the old run
    folder's new name, for the caller to remove. Raises OSError."""
    old = old_of(path)
    if path.exists() or path.is_symlink():
        os.replace(path, old)
    os.replace(attempt, path)
    return old


def recover_swap(path: Path) -> None:
    """Finish a swap of a retrained attempt that a crash cut between its two renames."""
    old = old_of(path)
    if not old.exists():
        return
    attempt = attempt_of(path)
    if path.exists():
        remove_tree(old)
    elif (attempt / RunDir.METRICS).exists():
        os.replace(attempt, path)
        remove_tree(old)
    else:
        os.replace(old, path)


def folder_record(root: Path, folder: Path) -> dict[str, Any] | None:
    """The index row of the run folder ``folder`` from its files alone (None when its config is
    unreadable): complete when its metrics parse, else the status its state names; the lease of
    a live holder (of the folder, or of an attempt beside a complete result) is kept."""
    run = RunDir(folder)
    try:
        spec = RunSpec.from_dict(read_json(run / RunDir.CONFIG))
    except (TypeError, KeyError, AttributeError, ValueError):
        return None
    state = read_json(run / RunDir.STATE)
    state = state if isinstance(state, dict) else {}
    if isinstance(read_json(run / RunDir.METRICS), dict):
        status = "complete"
        attempt = read_json(attempt_of(folder) / RunDir.STATE)
        holder = attempt if isinstance(attempt, dict) else {}
    else:
        status = state.get("status", "running")
        status = "interrupted" if status == "complete" else status
        holder = state
    record = index_columns(root, spec, folder, status if status in STATUSES else "interrupted")
    record.update(
        started=(run / RunDir.CONFIG).stat().st_mtime,
        finished=state.get("updated") if status == "complete" else None,
        error=_state_error(state) if status != "complete" else None,
    )
    now = time.time()
    if holder.get("status") == "running" and owner_alive(holder.get("owner"), now):
        record.update(owner=holder["owner"], heartbeat=now, lease=holder.get("lease"))
    return record


def _state_error(state: dict[str, Any]) -> str | None:
    """The index's error text of a run from its ``state.json``, as ``Store.fail`` writes it."""
    error, epoch = state.get("error"), state.get("epoch")
    if error is None:
        return None
    return f"epoch {epoch}: {error}" if epoch else str(error)
