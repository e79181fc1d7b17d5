"""Where results live: one folder per run plus a SQLite index ``<output>/calibench.db``.

A run folder (:class:`~calibench.store.files.RunDir` names its files) holds the resolved run
spec, the run's state, its split, log, checkpoints, selected weights, logits and, last of all,
its metrics. The run folders are the truth; the index is a cache of them that
:meth:`Store.rebuild_index` recreates from the folders alone (keeping the leases of live
processes). A run is ``pending`` (no row), ``running`` (claimed by a live process, which renews
its lease while it trains), ``complete`` (``metrics.json`` and ``logits.npz`` written and
readable), ``failed`` (an error or a non-finite loss; the reason is stored) or ``interrupted``
(stopped, its owner died, or its stored result is damaged; it resumes from its checkpoint).

Each claim trains in a folder of its own, created when it claims the run (the run folder, or
``<run folder>.attempt`` when a complete result is retrained) and written only through a handle
on it, behind a check that its lease still holds (:mod:`calibench.store.lease`). Taking a run
over sets the previous claim's folder aside and brings its checkpoints into a new one, so a
process that wakes after losing its lease cannot write into the run's folder.
docs/reliability.md states the rules.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.spec import MAX_SEED, RunSpec
from calibench.store.files import (
    RunDir,
    non_finite_keys,
    remove_tree,
    storage_error,
)
from calibench.store.folders import (
    RUNS_DIR,
    attempt_of,
    folder_record,
    recover_swap,
    run_folders,
    swap_in,
    take_folder,
)
from calibench.store.lease import LeaseLost, new_token, owner_alive, owner_id
from calibench.store.schema import (
    DAMAGED_SUFFIX,
    DB_NAME,
    SCHEMA,
    damaged_db,
    fetch,
    index_columns,
    index_error,
    insert,
    migrate,
)


def result_problem(path: Path, thorough: bool = False) -> str | None:
    """Why the run folder ``path`` holds no usable result, or None when it does
    (:meth:`RunDir.result_problem`)."""
    return RunDir(path).result_problem(thorough)


@dataclass
class Claim:
    """The right to train one run: its own folder (``run``, opened and fenced by the lease),
    whether to start from scratch, whether the folder is an attempt beside a complete result,
    and the lease token."""

    spec: RunSpec
    run: RunDir
    fresh: bool
    attempt: bool
    lease: str

    @property
    def dir(self) -> Path:
        return self.run.path

    def close(self) -> None:
        """Release the folder handle once the run has ended."""
        self.run.close()


class Store:
    """The results folder: run folders under ``runs/`` and the index ``calibench.db``.

    Nothing is created on disk until a run is claimed, so a rejected command leaves no trace."""

    def __init__(self, output: Path) -> None:
        self.root = Path(output)
        self.db_path = self.root / DB_NAME
        for folder in (self.root, *self.root.parents):
            if folder.exists() or folder.is_symlink():
                if not folder.is_dir():
                    where = "is" if folder == self.root else f"lies under {folder}, which is"
                    raise CalibenchError(
                        f"--output {self.root} {where} not a folder; give a folder for the results."
                    )
                break

    @contextmanager
    def _db(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction on the index; ``immediate`` takes the write lock at once and brings an
        older index to the current schema first."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(self.db_path, exc) from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            if immediate:
                conn.execute(SCHEMA)
                migrate(conn)
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise index_error(exc, self.db_path) from None
        finally:
            if conn is not None:
                conn.close()

    def _has_index(self) -> bool:
        """Whether the index exists and is not an empty (0-byte) file."""
        try:
            return self.db_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _ensure_index(self) -> None:
        """Rebuild a missing or empty index from the run folders before anything looks a run
        up, so that no complete run is taken for a pending one."""
        if not self._has_index() and (self.root / RUNS_DIR).is_dir():
            self.rebuild_index()

    def run_dir(self, spec: RunSpec) -> Path:
        return (
            self.root
            / RUNS_DIR
            / spec.dataset
            / spec.backbone.replace("/", "_")
            / spec.method
            / (f"seed{spec.seed}-{spec.run_id}")
        )

    def _row(self, spec: RunSpec) -> dict[str, Any] | None:
        self._ensure_index()
        if not self._has_index():
            return None
        with self._db() as conn:
            return fetch(conn, spec.run_id)

    def status(self, spec: RunSpec, thorough: bool = False) -> str:
        """``pending``, ``running`` (by a live process), ``complete``, ``failed`` or
        ``interrupted`` (including a ``running`` row whose owner has died and a complete run
        whose stored result is damaged; ``thorough`` checks every byte of it)."""
        return _effective_status(self._row(spec), self.run_dir(spec), thorough)

    def damage(self, spec: RunSpec) -> str | None:
        """Why a run indexed as complete has no usable result (None when it has one, or when it
        is not indexed as complete)."""
        row = self._row(spec)
        if row is None or row["status"] != "complete":
            return None
        return result_problem(self.run_dir(spec), thorough=True)

    def is_complete(self, spec: RunSpec) -> bool:
        return self.status(spec) == "complete"

    def claim(self, spec: RunSpec, force: bool = False, retry_failed: bool = False) -> Claim | str:
        """Atomically take the lease of ``spec`` for this process, or say why not (the string:
        ``complete``, ``failed`` or ``running``). The claim trains in a new folder of its own:
        ``force`` retrains a complete run in an attempt folder (the old result stays until the
        new one completes) and any other from scratch; otherwise the newest checkpoints of the
        previous claim come along (``retry_failed`` resumes a failed run). A claim interrupted
        before it is handed over gives its lease back."""
        if not 0 <= spec.seed <= MAX_SEED:
            raise CalibenchError(
                f"seed {spec.seed} is out of range: seeds must be integers in [0, {MAX_SEED}]."
            )
        self._ensure_index()
        path, token, fd = self.run_dir(spec), new_token(), None
        try:
            with self._db(immediate=True) as conn:
                with _storage(path):
                    recover_swap(path)
                row = fetch(conn, spec.run_id)
                status = _effective_status(row, path, thorough=True)
                refusal = _refusal(row, status, force, retry_failed)
                if refusal:
                    return refusal
                attempt = force and status == "complete"
                self._lease(conn, spec, "complete" if attempt else "running", token)
                folder = attempt_of(path) if attempt else path
                fd, aside = self._open_claim(spec, folder, token, inherit=not force)
            if aside is not None:
                remove_tree(aside)
            fence = partial(self._hold, spec.run_id, token)
            return Claim(spec, RunDir(folder, fence, fd), fresh=force, attempt=attempt, lease=token)
        except BaseException:
            if fd is not None:
                os.close(fd)
            self._give_back(spec.run_id, token)
            raise

    def _lease(self, conn: sqlite3.Connection, spec: RunSpec, status: str, token: str) -> None:
        """Record the lease ``token`` of this process on ``spec``'s row (inserted if new)."""
        columns = index_columns(self.root, spec, self.run_dir(spec), status)
        now = time.time()
        conn.execute(
            f"INSERT INTO runs ({', '.join(columns)}, started, owner, heartbeat, lease) "
            f"VALUES ({', '.join('?' * (len(columns) + 4))}) ON CONFLICT(run_id) DO UPDATE "
            "SET owner = excluded.owner, heartbeat = excluded.heartbeat, "
            "lease = excluded.lease, error = NULL, status = excluded.status, "
            "started = CASE WHEN excluded.status = 'complete' THEN runs.started "
            "ELSE excluded.started END",
            (*columns.values(), now, owner_id(), now, token),
        )

    def _give_back(self, run_id: str, token: str) -> None:
        """Mark the run interrupted if the lease ``token`` still holds it; quietly, since the
        store itself may be what failed (the lease then dies with this process)."""
        with suppress(CalibenchError, OSError):
            self._free(run_id, token, "interrupted", None)

    def _open_claim(
        self, spec: RunSpec, folder: Path, token: str, inherit: bool
    ) -> tuple[int, Path | None]:
        """Give the claim ``token`` its new ``folder`` (:func:`take_folder`) holding the run's
        config and state; returns the folder handle and the folder set aside."""
        with _storage(folder):
            fd, aside = take_folder(folder, token, inherit)
        try:
            run = RunDir(folder, dir_fd=fd)
            run.write_json(RunDir.CONFIG, spec.to_dict())
            self._write_state(run, "running", lease=token)
        except BaseException:
            os.close(fd)
            raise
        return fd, aside

    def _hold(self, run_id: str, token: str) -> None:
        """The fence of a claim: raise :class:`LeaseLost` unless its lease is still the run's."""
        with self._db() as conn:
            found = conn.execute("SELECT lease FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if found is None or found["lease"] != token:
            raise LeaseLost(run_id)

    def renew(self, claim: Claim, epoch: int | None = None) -> bool:
        """Renew the lease of ``claim`` (and record the last finished epoch); False when this
        process no longer holds it (another took the run over after the lease went stale)."""
        with self._db() as conn:
            held = conn.execute(
                "UPDATE runs SET heartbeat = ?, epoch = COALESCE(?, epoch) "
                "WHERE run_id = ? AND lease = ?",
                (time.time(), epoch, claim.spec.run_id, claim.lease),
            ).rowcount
        return held > 0

    def finish(self, claim: Claim, metrics: dict[str, Any], logits: dict[str, Any]) -> Path:
        """Store a trained run's result: ``logits.npz``, then ``metrics.json`` (with the keys of
        its non-finite values under ``non_finite``); mark it complete, swap a retrained attempt
        into place and release the lease. Returns the run folder. Raises :class:`LeaseLost`
        when another process took the run over meanwhile."""
        bad = non_finite_keys(metrics)
        if bad:
            metrics = {**metrics, "non_finite": bad}
        claim.run.save_arrays(RunDir.LOGITS, **logits)
        claim.run.write_json(RunDir.METRICS, metrics)
        self._write_state(claim.run, "complete")
        path = old = self.run_dir(claim.spec)
        with self._db(immediate=True) as conn:
            held = conn.execute(
                "UPDATE runs SET status = 'complete', finished = ?, owner = NULL, lease = NULL, "
                "error = NULL WHERE run_id = ? AND lease = ?",
                (time.time(), claim.spec.run_id, claim.lease),
            ).rowcount
            if not held:
                raise LeaseLost(claim.spec.run_id)
            if claim.attempt:
                with _storage(path):
                    old = swap_in(claim.dir, path)
        if old != path:
            remove_tree(old)
        return path

    def fail(
        self, claim: Claim, reason: str, epoch: int | None, details: str | None = None
    ) -> None:
        """Mark a run failed with the reason, the epoch it failed in and the traceback
        ``details`` (kept in ``error.txt``); release its lease. A failed retrain of a complete
        run leaves the complete result as it was."""
        if details:
            claim.run.write_text(RunDir.ERROR, details)
        self._write_state(claim.run, "failed", error=reason, epoch=epoch)
        error = f"epoch {epoch}: {reason}" if epoch else reason
        self._free(claim.spec.run_id, claim.lease, "failed", error)

    def interrupt(self, claim: Claim) -> None:
        """Mark a run interrupted (it resumes from its checkpoint) and release its lease."""
        self._write_state(claim.run, "interrupted")
        self._free(claim.spec.run_id, claim.lease, "interrupted", None)

    def fail_dead_owner(self, spec: RunSpec, owner: str, reason: str) -> bool:
        """Mark ``spec`` failed with ``reason`` if the (dead) process ``owner`` still holds its
        lease, as when a worker process is killed mid-run; returns whether it did."""
        if not self._has_index():
            return False
        with self._db(immediate=True) as conn:
            hit = conn.execute(
                "UPDATE runs SET status = CASE WHEN status = 'complete' THEN 'complete' "
                "ELSE 'failed' END, error = ?, owner = NULL, lease = NULL "
                "WHERE run_id = ? AND owner = ?",
                (reason, spec.run_id, owner),
            ).rowcount
            row = fetch(conn, spec.run_id) if hit else None
            run = RunDir(self.run_dir(spec))
            if row and row["status"] == "failed" and run.exists(RunDir.STATE):
                self._write_state(run, "failed", error=reason)
        return bool(hit)

    def _free(self, run_id: str, token: str, status: str, error: str | None) -> None:
        """Release the lease ``token`` of ``run_id``, recording ``status`` (a complete run stays
        complete) and ``error``."""
        with self._db() as conn:
            conn.execute(
                "UPDATE runs SET status = CASE WHEN status = 'complete' THEN 'complete' ELSE ? "
                "END, error = ?, owner = NULL, lease = NULL WHERE run_id = ? AND lease = ?",
                (status, error, run_id, token),
            )

    def _write_state(self, run: RunDir, status: str, **extra: Any) -> None:
        state = {"status": status, "owner": owner_id(), "updated": time.time(), **extra}
        run.write_json(RunDir.STATE, state)

    def runs(self) -> list[dict[str, Any]]:
        """Index rows of every run with its effective status and ``dir`` the run folder's
        absolute path; the index is rebuilt from the run folders when it is missing, empty or
        lists no run while run folders exist."""
        self._ensure_index()
        if not self._has_index():
            raise CalibenchError(
                f"no results in {self.root}: neither {DB_NAME} nor {RUNS_DIR}/ exists. Run "
                "`calibench run` first or point --output at a results folder."
            )
        rows = self._rows()
        if not rows and run_folders(self.root):
            self.rebuild_index()
            rows = self._rows()
        for row in rows:
            row.pop("metrics", None)
            row.setdefault("lease", None)
            row["dir"] = self.root / row["path"]
            if row["status"] == "complete":
                row["damaged"] = result_problem(row["dir"])
            row["status"] = _effective_status(row, row["dir"])
            if row.get("damaged"):
                row["error"] = f"stored result damaged: {row['damaged']}"
        return rows

    def _rows(self) -> list[dict[str, Any]]:
        with self._db() as conn:
            found = conn.execute("SELECT * FROM runs ORDER BY dataset, backbone, method, seed")
            return [dict(r) for r in found.fetchall()]

    def complete_runs(self) -> list[dict[str, Any]]:
        """Index rows of every complete run (see :meth:`runs`)."""
        return [r for r in self.runs() if r["status"] == "complete"]

    def rebuild_index(self) -> int:
        """Recreate the index from the run folders alone (their ``config.json``,
        ``metrics.json`` and ``state.json``, and the state of an attempt beside a complete
        result); returns the number of runs indexed. The row of a run whose lease is alive is
        kept as it was, so a rebuild never frees a run that a live process trains. An index that
        is not a SQLite database any more is first set aside as ``calibench.db.damaged``."""
        if damaged_db(self.db_path):
            os.replace(self.db_path, self.db_path.with_name(DB_NAME + DAMAGED_SUFFIX))
        records = [r for r in (folder_record(self.root, f) for f in run_folders(self.root)) if r]
        with self._db(immediate=True) as conn:
            rows = conn.execute("SELECT * FROM runs WHERE owner IS NOT NULL").fetchall()
            live = {r["run_id"]: dict(r) for r in rows if owner_alive(r["owner"], r["heartbeat"])}
            conn.execute("DELETE FROM runs")
            records = [r for r in records if r["run_id"] not in live] + list(live.values())
            for record in records:
                insert(conn, record)
        return len(records)


def _refusal(
    row: dict[str, Any] | None, status: str, force: bool, retry_failed: bool
) -> str | None:
    """Why a claim is refused (``running``, ``complete``, ``failed``), or None."""
    if row and row["owner"] not in (None, owner_id()):
        if owner_alive(row["owner"], row["heartbeat"]):
            return "running"
    if status in ("complete", "failed") and not force:
        if status == "complete" or not retry_failed:
            return status
    return None


@contextmanager
def _storage(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise storage_error(path, exc) from None


def _effective_status(row: dict[str, Any] | None, path: Path, thorough: bool = False) -> str:
    if row is None:
        return "pending"
    status = row["status"]
    if status == "complete" and result_problem(path, thorough) is not None:
        return "interrupted"
    if status == "running" and not owner_alive(row.get("owner"), row.get("heartbeat")):
        return "interrupted"
    if status == "running" and row.get("owner") == owner_id():
        return "interrupted"
    return status
