"""Where results live: one folder per run plus a SQLite index ``<output>/calibench.db``.

A run folder holds ``config.json`` (the resolved run spec), ``split.npz`` (train/val indices),
``log.csv`` (one row per epoch), ``last.pt`` (resume checkpoint), ``best.pt`` (the weights of
the best-validation epoch), ``logits.npz`` (validation, test and OOD logits with labels) and,
last of all, ``metrics.json``. Every file is written to a temporary name in the same folder and
renamed into place, so an interruption never leaves a half-written file; a run counts as
complete only once ``metrics.json`` exists and the index says so.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibench.config import RunSpec
from calibench.errors import CalibenchError

UMASK = os.umask(0)
os.umask(UMASK)
DB_NAME = "calibench.db"
RUNS_DIR = "runs"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    method   TEXT NOT NULL,
    dataset  TEXT NOT NULL,
    backbone TEXT NOT NULL,
    seed     INTEGER NOT NULL,
    epochs   INTEGER NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('running', 'complete')),
    path     TEXT NOT NULL,
    config   TEXT NOT NULL,
    metrics  TEXT,
    started  REAL NOT NULL,
    finished REAL
)
"""


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


def write_text(path: Path, text: str) -> None:
    """Write ``text``, atomically."""
    _atomic(path, lambda p: p.write_text(text))


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Save arrays to an ``.npz`` file, atomically."""

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    _atomic(path, write)


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    _atomic(path, lambda p: torch.save(obj, p))


class Store:
    """The results folder: run folders under ``runs/`` and the index ``calibench.db``."""

    def __init__(self, output: Path) -> None:
        self.root = Path(output)
        self.db_path = self.root / DB_NAME
        if self.root.exists() and not self.root.is_dir():
            raise CalibenchError(f"--output {self.root} is a file; give a folder for the results.")

    @contextmanager
    def _db(self, create: bool = True) -> Iterator[sqlite3.Connection]:
        if not create and not self.db_path.exists():
            raise CalibenchError(
                f"no results in {self.root}: {DB_NAME} does not exist. Run `calibench run` first "
                "or point --output at a results folder."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=60)
        try:
            conn.execute(SCHEMA)
            with conn:
                yield conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise CalibenchError(f"{self.db_path}: {exc}") from None
            raise CalibenchError(
                f"{self.db_path} stayed locked by another calibench process for 60 s; retry "
                "(on a network file system, give every job a local --output instead)."
            ) from None
        except sqlite3.DatabaseError as exc:
            raise CalibenchError(
                f"{self.db_path} is not a usable calibench database: {exc}"
            ) from None
        finally:
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

    def is_complete(self, spec: RunSpec) -> bool:
        with self._db() as conn:
            row = conn.execute(
                "SELECT status FROM runs WHERE run_id = ?", (spec.run_id,)
            ).fetchone()
        return bool(row and row[0] == "complete" and (self.run_dir(spec) / "metrics.json").exists())

    def begin(self, spec: RunSpec) -> Path:
        """Create (or reopen, to resume) the run folder and index it as running; a complete run
        that is being retrained (``--force``) keeps its stored result until :meth:`finish`."""
        path = self.run_dir(spec)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "config.json", spec.to_dict())
        with self._db() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, method, dataset, backbone, seed, epochs, status, path, "
                "config, started) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?) "
                "ON CONFLICT(run_id) DO NOTHING",
                (
                    spec.run_id,
                    spec.method,
                    spec.dataset,
                    spec.backbone,
                    spec.seed,
                    spec.training.epochs,
                    str(path.relative_to(self.root)),
                    json.dumps(spec.to_dict(), sort_keys=True),
                    time.time(),
                ),
            )
        return path

    def finish(self, spec: RunSpec, metrics: dict[str, Any]) -> None:
        """Write ``metrics.json`` and mark the run complete."""
        write_json(self.run_dir(spec) / "metrics.json", metrics)
        with self._db() as conn:
            conn.execute(
                "UPDATE runs SET status = 'complete', metrics = ?, finished = ? WHERE run_id = ?",
                (json.dumps(metrics, sort_keys=True), time.time(), spec.run_id),
            )

    def reset(self, spec: RunSpec) -> None:
        """Drop a run's resume checkpoint so it trains from scratch (``--force``); its old
        results stay until the new run overwrites them."""
        (self.run_dir(spec) / "last.pt").unlink(missing_ok=True)

    def complete_runs(self) -> list[dict[str, Any]]:
        """Index rows of every complete run, with ``dir`` the run folder's absolute path."""
        with self._db(create=False) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM runs WHERE status = 'complete' "
                "ORDER BY dataset, backbone, method, seed"
            ).fetchall()
        return [{**dict(r), "dir": self.root / r["path"]} for r in rows]
