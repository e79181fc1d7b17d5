"""The SQLite index's table: its columns, the migration of indexes written by older versions,
and the check that tells a damaged database file from a locked one."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.spec import RunSpec
from calibench.store.files import StorageError

DB_NAME = "calibench.db"
DAMAGED_SUFFIX = ".damaged"
"""A damaged index is set aside as ``calibench.db.damaged`` when it is rebuilt."""
STATUSES = ("running", "complete", "failed", "interrupted")

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
    started   REAL NOT NULL,
    finished  REAL,
    owner     TEXT,
    heartbeat REAL,
    error     TEXT,
    epoch     INTEGER,
    lease     TEXT
)
"""
COLUMNS = (
    "run_id", "method", "dataset", "backbone", "seed", "epochs", "status", "path", "config",
    "started", "finished", "owner", "heartbeat", "error", "epoch", "lease",
)  # fmt: skip
"""The index's columns. Earlier versions also stored each run's metrics (written, never read:
``metrics.json`` is the truth); :func:`migrate` drops that column."""


def index_columns(root: Path, spec: RunSpec, folder: Path, status: str) -> dict[str, Any]:
    """The identity columns of a run's index row (run id, method, dataset, backbone, seed,
    epochs, status, the run folder relative to ``root``, the config)."""
    return {
        "run_id": spec.run_id,
        "method": spec.method,
        "dataset": spec.dataset,
        "backbone": spec.backbone,
        "seed": spec.seed,
        "epochs": spec.training.epochs,
        "status": status,
        "path": str(folder.relative_to(root)),
        "config": json.dumps(spec.to_dict(), sort_keys=True),
    }


def fetch(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """The index row of ``run_id`` (None when there is none)."""
    found = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return dict(found) if found else None


def insert(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
    """Insert ``record``'s values of the index's columns as a new row."""
    names = [c for c in COLUMNS if c in record]
    conn.execute(
        f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [record[c] for c in names],
    )


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an index written by an older calibench (two statuses, no lease columns, a metrics
    column) to the current schema inside the caller's write transaction, keeping every row.
    Only writers migrate, so reading an index that an older version still writes changes
    nothing."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    if "'failed'" in sql and "lease" in columns and "metrics" not in columns:
        return
    conn.execute("ALTER TABLE runs RENAME TO runs_before_migration")
    conn.execute(SCHEMA)
    shared = ", ".join(c for c in COLUMNS if c in columns)
    conn.execute(f"INSERT INTO runs ({shared}) SELECT {shared} FROM runs_before_migration")
    conn.execute("DROP TABLE runs_before_migration")


def damaged_db(path: Path) -> bool:
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


def index_error(exc: sqlite3.DatabaseError, db_path: Path) -> CalibenchError:
    """The one message of a failed use of the index ``db_path``: locked too long, unusable (a
    read-only or full folder: a :class:`StorageError`), or no SQLite database at all."""
    root = db_path.parent
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StorageError(
            f"{db_path} stayed locked by another calibench process for 60 s; retry "
            "(on a network file system, give every job a local --output instead)."
        )
    if isinstance(exc, sqlite3.OperationalError):
        return StorageError(
            f"cannot use the index {db_path}: {exc}. Check that {root} is a writable folder "
            "with free space (or give another --output)."
        )
    return CalibenchError(
        f"{db_path} is not a usable calibench database ({exc}). `calibench status --rebuild "
        f"--output {root}` sets it aside as {DB_NAME}{DAMAGED_SUFFIX} and rebuilds the index "
        "from the run folders."
    )
