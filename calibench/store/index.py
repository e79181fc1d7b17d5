"""Where results live: one folder per run plus a SQLite index ``<output>/calibench.db``.

A run folder holds ``config.json`` (the resolved run spec), ``state.json`` (status, owner,
error), ``split.npz`` (train/val indices), ``log.csv`` (one row per epoch), ``last.pt`` and
``last.prev.pt`` (the two newest resume checkpoints), ``best.pt`` (the weights of the
best-validation epoch), ``logits.npz`` (validation, test and OOD logits with labels) and, last
of all, ``metrics.json``; a run that failed on an unexpected error keeps its traceback in
``error.txt``. Every file is written to a temporary name in the same folder and
renamed into place, so an interruption never leaves a half-written file.

The run folders are the truth; the index is a cache of them that :meth:`Store.rebuild_index`
recreates from the folders alone. A run is ``pending`` (no row), ``running`` (claimed by a live
process, which renews its lease while it trains), ``complete`` (``metrics.json`` and
``logits.npz`` written and readable), ``failed`` (an error or a non-finite loss; the reason is
stored) or ``interrupted`` (stopped, its owner died, or its stored result is damaged; it resumes
from its checkpoint). docs/reliability.md states the rules.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.spec import MAX_SEED, RunSpec
from calibench.store.files import non_finite_keys, read_json, strict_json, write_json

DB_NAME = "calibench.db"
RUNS_DIR = "runs"
STATUSES = ("running", "complete", "failed", "interrupted")
LEASE_SECONDS = 300.0
"""A lease is stale once its heartbeat is this old (the holder renews it every 30 s), and at once
when its holder ran on this host and its process has gone."""
ATTEMPT_SUFFIX = ".attempt"
OLD_SUFFIX = ".old"
DAMAGED_SUFFIX = ".damaged"
"""The largest run seed: the index stores it as a 64-bit integer and the trainer seeds its
random streams with the seed plus 2."""
RESULT_ARRAYS = ("val_logits", "val_labels", "test_logits", "test_labels")
"""The arrays every complete run's ``logits.npz`` holds."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id    TEXT PRIMARY KEY,
    method    TEXT NOT NULL,
    dataset   TEXT NOT NULL,
    backbone  TEXT NOT NULL,
    seed      INTEGER NOT NULL,
    epochs    INTEGER NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    path      TEXT NOT NULL,
    config    TEXT NOT NULL,
    metrics   TEXT,
    started   REAL NOT NULL,
    finished  REAL,
    owner     TEXT,
    heartbeat REAL,
    error     TEXT,
    epoch     INTEGER
)
"""


def owner_id(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of process ``pid`` on this host): the owner recorded in
    a lease."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def owner_alive(owner: str | None, heartbeat: float | None) -> bool:
    """Whether the process holding a lease still lives: its heartbeat is younger than
    :data:`LEASE_SECONDS` and, on this host, its process id still exists (so a death here is
    seen at once, and a reused process id does not keep a dead lease forever)."""
    if not owner or heartbeat is None or time.time() - heartbeat >= LEASE_SECONDS:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _process_lives(int(pid))
    return True


def _process_lives(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and has not exited (a zombie, an exited
    process its parent has not reaped yet, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def result_problem(path: Path, thorough: bool = False) -> str | None:
    """Why the run folder ``path`` holds no usable result, or None when it does: its
    ``metrics.json`` must parse to an object and its ``logits.npz`` must open as an archive of
    :data:`RESULT_ARRAYS`; ``thorough`` also checks every byte against the archive's CRCs."""
    metrics = path / "metrics.json"
    if not metrics.exists():
        return "metrics.json is missing"
    if not isinstance(read_json(metrics), dict):
        return "metrics.json is damaged"
    try:
        with zipfile.ZipFile(path / "logits.npz") as archive:
            missing = [a for a in RESULT_ARRAYS if f"{a}.npy" not in archive.namelist()]
            bad = archive.testzip() if thorough else None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        return f"logits.npz is damaged ({type(exc).__name__}: {exc})"
    if missing:
        return f"logits.npz lacks {', '.join(missing)}"
    if bad:
        return f"logits.npz is damaged ({bad} fails its CRC check)"
    return None


@dataclass
class Claim:
    """The right to train one run: where to write (the run folder, or a fresh attempt folder
    when a complete result is retrained) and whether to start from scratch."""

    spec: RunSpec
    dir: Path
    fresh: bool
    attempt: bool


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
        self.root.mkdir(parents=True, exist_ok=True)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            conn.execute(SCHEMA)
            _migrate(conn)
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise CalibenchError(
                    f"cannot use the index {self.db_path}: {exc}. Check that {self.root} is a "
                    "writable folder with free space (or give another --output)."
                ) from None
            raise CalibenchError(
                f"{self.db_path} stayed locked by another calibench process for 60 s; retry "
                "(on a network file system, give every job a local --output instead)."
            ) from None
        except sqlite3.DatabaseError as exc:
            raise CalibenchError(
                f"{self.db_path} is not a usable calibench database ({exc}). "
                f"`calibench status --rebuild --output {self.root}` sets it aside as "
                f"{DB_NAME}{DAMAGED_SUFFIX} and rebuilds the index from the run folders."
            ) from None
        finally:
            if conn is not None:
                conn.close()

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
        if not self.db_path.exists():
            return None
        with self._db() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (spec.run_id,)).fetchone()
        return dict(row) if row else None

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
        ``complete``, ``failed`` or ``running``). ``force`` retrains a complete run into a fresh
        attempt folder (the old result stays until the new one completes) and a failed one
        from scratch; ``retry_failed`` resumes a failed run."""
        if not 0 <= spec.seed <= MAX_SEED:
            raise CalibenchError(
                f"seed {spec.seed} is out of range: seeds must be integers in [0, {MAX_SEED}]."
            )
        path = self.run_dir(spec)
        _recover_swap(path)
        with self._db(immediate=True) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute("SELECT * FROM runs WHERE run_id = ?", (spec.run_id,)).fetchone()
            row = dict(found) if found else None
            status = _effective_status(row, path, thorough=True)
            if row and row["owner"] not in (None, owner_id()):
                if owner_alive(row["owner"], row["heartbeat"]):
                    return "running"
            if status in ("complete", "failed") and not force:
                if status == "complete" or not retry_failed:
                    return status
            attempt = force and status == "complete"
            kept = "complete" if attempt else "running"
            now = time.time()
            conn.execute(
                "INSERT INTO runs (run_id, method, dataset, backbone, seed, epochs, status, path, "
                "config, started, owner, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET owner = excluded.owner, "
                "heartbeat = excluded.heartbeat, error = NULL, status = excluded.status, "
                "started = CASE WHEN excluded.status = 'complete' THEN runs.started "
                "ELSE excluded.started END",
                (*self._index_columns(spec, path, kept), now, owner_id(), now),
            )
        target = path.with_name(path.name + ATTEMPT_SUFFIX) if attempt else path
        if attempt:
            shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        if not attempt:
            for stale in ("metrics.json", "error.txt"):
                (target / stale).unlink(missing_ok=True)
        write_json(target / "config.json", spec.to_dict())
        self._write_state(target, "running")
        return Claim(spec, target, fresh=force, attempt=attempt)

    def renew(self, claim: Claim, epoch: int | None = None) -> bool:
        """Renew the lease of ``claim`` (and record the last finished epoch); False when this
        process no longer holds it (another took the run over after the lease went stale)."""
        with self._db() as conn:
            held = conn.execute(
                "UPDATE runs SET heartbeat = ?, epoch = COALESCE(?, epoch) "
                "WHERE run_id = ? AND owner = ?",
                (time.time(), epoch, claim.spec.run_id, owner_id()),
            ).rowcount
        return held > 0

    def finish(self, claim: Claim, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json``, swap a retrained attempt into place, mark the run complete
        and release its lease. Returns the run folder."""
        bad = non_finite_keys(metrics)
        if bad:
            metrics = {**metrics, "non_finite": bad}
        write_json(claim.dir / "metrics.json", metrics)
        self._write_state(claim.dir, "complete")
        path = self.run_dir(claim.spec)
        if claim.attempt:
            old = path.with_name(path.name + OLD_SUFFIX)
            if path.exists():
                os.replace(path, old)
            os.replace(claim.dir, path)
            shutil.rmtree(old, ignore_errors=True)
        with self._db() as conn:
            conn.execute(
                "UPDATE runs SET status = 'complete', metrics = ?, finished = ?, owner = NULL, "
                "error = NULL WHERE run_id = ?",
                (json.dumps(strict_json(metrics), sort_keys=True), time.time(), claim.spec.run_id),
            )
        return path

    def fail(self, claim: Claim, reason: str, epoch: int | None) -> None:
        """Mark a run failed with the reason and the epoch it failed in; release its lease. A
        failed retrain of a complete run leaves the complete result as it was."""
        self._write_state(claim.dir, "failed", error=reason, epoch=epoch)
        self._release(claim, "failed", f"epoch {epoch}: {reason}" if epoch else reason)

    def interrupt(self, claim: Claim) -> None:
        """Mark a run interrupted (it resumes from its checkpoint) and release its lease."""
        self._write_state(claim.dir, "interrupted")
        self._release(claim, "interrupted", None)

    def fail_dead_owner(self, spec: RunSpec, owner: str, reason: str) -> bool:
        """Mark ``spec`` failed with ``reason`` if the (dead) process ``owner`` still holds its
        lease, as when a worker process is killed mid-run; returns whether it did."""
        if not self.db_path.exists():
            return False
        with self._db(immediate=True) as conn:
            hit = conn.execute(
                "UPDATE runs SET status = CASE WHEN status = 'complete' THEN 'complete' "
                "ELSE 'failed' END, error = ?, owner = NULL WHERE run_id = ? AND owner = ?",
                (reason, spec.run_id, owner),
            ).rowcount
        if hit:
            path = self.run_dir(spec)
            if (path / "state.json").exists() and self.status(spec) == "failed":
                self._write_state(path, "failed", error=reason)
        return bool(hit)

    def _release(self, claim: Claim, status: str, error: str | None) -> None:
        with self._db() as conn:
            conn.execute(
                "UPDATE runs SET status = CASE WHEN status = 'complete' THEN 'complete' ELSE ? "
                "END, error = ?, owner = NULL WHERE run_id = ? AND owner = ?",
                (status, error, claim.spec.run_id, owner_id()),
            )

    def _write_state(self, path: Path, status: str, **extra: Any) -> None:
        state = {"status": status, "owner": owner_id(), "updated": time.time(), **extra}
        write_json(path / "state.json", state)

    def runs(self) -> list[dict[str, Any]]:
        """Index rows of every run with its effective status and ``dir`` the run folder's
        absolute path; the index is rebuilt from the run folders when it is missing."""
        if not self.db_path.exists():
            if not (self.root / RUNS_DIR).is_dir():
                raise CalibenchError(
                    f"no results in {self.root}: neither {DB_NAME} nor {RUNS_DIR}/ exists. Run "
                    "`calibench run` first or point --output at a results folder."
                )
            self.rebuild_index()
        with self._db() as conn:
            conn.row_factory = sqlite3.Row
            rows = [
                dict(r)
                for r in conn.execute(
                    "SELECT * FROM runs ORDER BY dataset, backbone, method, seed"
                ).fetchall()
            ]
        for row in rows:
            row["dir"] = self.root / row["path"]
            if row["status"] == "complete":
                row["damaged"] = result_problem(row["dir"])
            row["status"] = _effective_status(row, row["dir"])
            if row.get("damaged"):
                row["error"] = f"stored result damaged: {row['damaged']}"
        return rows

    def complete_runs(self) -> list[dict[str, Any]]:
        """Index rows of every complete run (see :meth:`runs`)."""
        return [r for r in self.runs() if r["status"] == "complete"]

    def _index_columns(self, spec: RunSpec, folder: Path, status: str) -> tuple:
        """The index columns run_id, method, dataset, backbone, seed, epochs, status, path and
        config of a run, in that order."""
        return (
            spec.run_id,
            spec.method,
            spec.dataset,
            spec.backbone,
            spec.seed,
            spec.training.epochs,
            status,
            str(folder.relative_to(self.root)),
            json.dumps(spec.to_dict(), sort_keys=True),
        )

    def rebuild_index(self) -> int:
        """Recreate the index from the run folders alone (their ``config.json``,
        ``metrics.json`` and ``state.json``); returns the number of runs indexed. An index that
        is not a SQLite database any more is first set aside as ``calibench.db.damaged``."""
        if _damaged_db(self.db_path):
            os.replace(self.db_path, self.db_path.with_name(DB_NAME + DAMAGED_SUFFIX))
        folders = [
            p.parent
            for p in sorted((self.root / RUNS_DIR).glob("*/*/*/*/config.json"))
            if not p.parent.name.endswith((ATTEMPT_SUFFIX, OLD_SUFFIX))
        ]
        records = []
        for folder in folders:
            config = read_json(folder / "config.json")
            try:
                spec = RunSpec.from_dict(config)
            except (TypeError, KeyError, AttributeError, ValueError):
                continue
            metrics = read_json(folder / "metrics.json")
            state = read_json(folder / "state.json")
            state = state if isinstance(state, dict) else {}
            if isinstance(metrics, dict):
                status = "complete"
            else:
                metrics = None
                status = state.get("status", "running")
                status = "interrupted" if status == "complete" else status
            if status not in STATUSES:
                status = "interrupted"
            records.append((spec, folder, status, metrics, state))
        with self._db(immediate=True) as conn:
            conn.execute("DELETE FROM runs")
            for spec, folder, status, metrics, state in records:
                mtime = (folder / "config.json").stat().st_mtime
                conn.execute(
                    "INSERT OR REPLACE INTO runs (run_id, method, dataset, backbone, seed, epochs,"
                    " status, path, config, metrics, started, finished, owner, heartbeat, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *self._index_columns(spec, folder, status),
                        json.dumps(strict_json(metrics), sort_keys=True) if metrics else None,
                        mtime,
                        state.get("updated") if status == "complete" else None,
                        state.get("owner") if status == "running" else None,
                        time.time() if status == "running" else None,
                        _state_error(state),
                    ),
                )
        return len(records)


def _damaged_db(path: Path) -> bool:
    """Whether ``path`` exists but is not a readable SQLite database (a lock is no damage)."""
    if not path.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as conn:
            conn.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.OperationalError:
        return False
    except sqlite3.DatabaseError:
        return True
    return False


def _state_error(state: dict[str, Any]) -> str | None:
    """The index's error text of a run from its ``state.json``, as :meth:`Store.fail` writes it."""
    error, epoch = state.get("error"), state.get("epoch")
    if error is None:
        return None
    return f"epoch {epoch}: {error}" if epoch else str(error)


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


def _recover_swap(path: Path) -> None:
    """Finish a swap of a retrained attempt that a crash cut between its two renames."""
    old = path.with_name(path.name + OLD_SUFFIX)
    if not old.exists():
        return
    attempt = path.with_name(path.name + ATTEMPT_SUFFIX)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
    elif (attempt / "metrics.json").exists():
        os.replace(attempt, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, path)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an index written by an older calibench (two statuses, no lease columns) to the
    current schema, keeping every row."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    if "'failed'" in sql:
        return
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("ALTER TABLE runs RENAME TO runs_v1")
    conn.execute(SCHEMA)
    shared = "run_id, method, dataset, backbone, seed, epochs, status, path, config, metrics, "
    shared += "started, finished"
    conn.execute(f"INSERT INTO runs ({shared}) SELECT {shared} FROM runs_v1")
    conn.execute("DROP TABLE runs_v1")
    conn.execute("COMMIT")
