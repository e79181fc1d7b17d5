"""calibench/store/index.py, folders.py, schema.py: the index and its rebuild from the run
folders, claims in folders of their own, damaged results, forced retrains and old indexes
(docs/reliability.md)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
from store_helpers import (
    REPO,
    Recorder,
    StopAfter,
    cli,
    log_lines,
    one_error_line,
    rows,
    specs_of,
    strict_json,
    wait_for,
)

from calibench.cli import main
from calibench.store.files import RunDir
from calibench.store.index import Store, result_problem
from calibench.store.lease import LEASE_SECONDS, owner_id
from calibench.training.runner import run_one


def test_non_finite_metrics_are_stored_as_strict_json(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 1)[0]
    claim = store.claim(spec)
    logits = {name: [0.0] for name in RunDir.RESULT_ARRAYS}
    store.finish(claim, {"acc": 0.5, "nll": math.inf, "ece": math.nan}, logits)
    metrics = strict_json(store.run_dir(spec) / "metrics.json")
    assert metrics == {"acc": 0.5, "nll": None, "ece": None, "non_finite": ["ece", "nll"]}
    with sqlite3.connect(store.db_path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        assert "metrics" not in columns
        assert conn.execute("SELECT status, owner FROM runs").fetchall() == [("complete", None)]


def test_an_index_written_by_an_older_version_is_read_as_is_and_migrated_on_write(tmp_path):
    copy = tmp_path / "digits"
    skip_report = shutil.ignore_patterns("report")
    shutil.copytree(REPO / "results" / "digits-3seeds", copy, ignore=skip_report)
    db = copy / "calibench.db"

    def columns() -> list[str]:
        with sqlite3.connect(db) as conn:
            return [r[1] for r in conn.execute("PRAGMA table_info(runs)")]

    assert "metrics" in columns() and "lease" not in columns()
    before = {r["run_id"]: r["status"] for r in Store(copy).runs()}
    assert main(["status", "--output", str(copy)]) == 0
    assert "metrics" in columns(), "reading must not alter an index an older version may write"
    spec = specs_of(["ce"], 1)[0]
    claim = Store(copy).claim(spec)
    claim.close()
    assert "metrics" not in columns() and "lease" in columns()
    after = {r["run_id"]: r["status"] for r in Store(copy).runs()}
    assert {k: v for k, v in after.items() if k != spec.run_id} == before


# A damaged complete run ------------------------------------------------------------------


def test_damaged_complete_run_is_reported_listed_and_recomputed(store_copy, capsys):
    store = Store(store_copy)
    ce, ls = (store.run_dir(s) for s in specs_of(["ce", "ls"], 1))
    before = {d: strict_json(d / "metrics.json") for d in (ce, ls)}
    logs = {d: log_lines(d) for d in (ce, ls)}
    logits = (ce / "logits.npz").read_bytes()
    (ce / "logits.npz").write_bytes(logits[: len(logits) // 2])

    assert main(["status", "--output", str(store_copy)]) == 0
    listing = " ".join(capsys.readouterr().out.split())
    assert "damaged" in listing
    found = {r["method"]: r for r in store.runs()}
    assert found["ce"]["status"] == "interrupted"
    assert found["ce"]["error"].startswith("stored result damaged: logits.npz is damaged")
    assert "1 complete, 1 interrupted" in listing

    assert main(["report", "--output", str(store_copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"warning: run folder {ce} is damaged" in out
    with open(store_copy / "report" / "results.csv") as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["ls"]

    # A flipped byte inside ls's logits: the archive still opens, only its CRCs tell.
    data = bytearray((ls / "logits.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ls / "logits.npz").write_bytes(bytes(data))
    assert {r["method"]: r["status"] for r in store.runs()}["ls"] == "complete"
    assert main(["report", "--output", str(store_copy)]) == 2
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())
    assert f"warning: run folder {ce} is damaged" in out
    assert f"warning: run folder {ls} is damaged" in out and "Bad CRC-32" in out
    assert "no complete runs" in one_error_line(captured.err)

    argv = ["run", "--methods", "ce,ls", "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--output", str(store_copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("its stored result is damaged") == 2 and out.count("done ") == 2
    for run_dir in (ce, ls):
        assert result_problem(run_dir, thorough=True) is None
        assert log_lines(run_dir) == logs[run_dir]
        after = strict_json(run_dir / "metrics.json")
        for key in ("acc", "ece", "nll", "temperature", "best_epoch"):
            assert after[key] == before[run_dir][key]
        assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]
    assert main(["report", "--output", str(store_copy)]) == 0


def test_report_without_complete_results_exits_2(store_copy, capsys):
    for run_dir in store_copy.glob("runs/*/*/*/*"):
        (run_dir / "logits.npz").write_bytes(b"")
    assert main(["report", "--output", str(store_copy)]) == 2
    assert "no complete runs" in capsys.readouterr().err


# Leases ----------------------------------------------------------------------------------


def test_a_live_lease_is_respected_and_a_dead_or_stale_one_taken_over(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 1)[0]
    first = store.claim(spec)
    assert not isinstance(first, str)
    other = owner_id(os.getppid())

    def lease(owner: str, age: float) -> None:
        with sqlite3.connect(store.db_path) as conn:
            conn.execute(
                "UPDATE runs SET owner = ?, heartbeat = ?, status = 'running'",
                (owner, time.time() - age),
            )

    lease(other, 0.0)
    assert store.status(spec) == "running"
    outcome = run_one(spec, store)
    assert outcome.status == "skipped" and outcome.reason == "being trained by another live process"
    lease(other, LEASE_SECONDS + 1)
    assert store.status(spec) == "interrupted"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease(owner_id(dead.pid), 0.0)
    assert store.status(spec) == "interrupted"
    claim = store.claim(spec)
    assert not isinstance(claim, str) and rows(store.db_path)["ce"]["owner"] == owner_id()
    assert rows(store.db_path)["ce"]["lease"] == claim.lease != first.lease
    claim.close()
    first.close()


def test_a_takeover_gives_the_new_claim_a_folder_of_its_own(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 2)[0]
    with pytest.raises(KeyboardInterrupt):
        run_one(spec, store, StopAfter(1))
    run_dir = store.run_dir(spec)
    inode = run_dir.stat().st_ino
    stale = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        claim = store.claim(spec)
        assert run_dir.stat().st_ino != inode
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(
            [RunDir.CHECKSUMS, RunDir.CONFIG, RunDir.LAST, RunDir.STATE]
        )
        with pytest.raises(FileNotFoundError):
            os.open("late.txt", os.O_WRONLY | os.O_CREAT, dir_fd=stale)
        claim.close()
    finally:
        os.close(stale)
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]


# The index: missing, empty, damaged, rebuilt ---------------------------------------------


def test_run_rebuilds_a_deleted_index_before_it_claims_anything(store_copy, capsys):
    before = {p: p.read_bytes() for p in store_copy.glob("runs/*/*/*/*/*")}
    (store_copy / "calibench.db").unlink()
    argv = ["run", "--methods", "ce,ls", "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--output", str(store_copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("already complete") == 2 and "done " not in out
    assert {p: p.read_bytes() for p in store_copy.glob("runs/*/*/*/*/*")} == before


def test_report_and_status_rebuild_a_missing_index(store_copy, capsys):
    expected = {r["run_id"]: r["status"] for r in Store(store_copy).runs()}
    (store_copy / "calibench.db").unlink()
    assert main(["report", "--output", str(store_copy)]) == 0
    with open(store_copy / "report" / "results.csv") as fh:
        assert len(fh.read().splitlines()) == 1 + len(expected)
    assert {r["run_id"]: r["status"] for r in Store(store_copy).runs()} == expected
    assert main(["status", "--rebuild", "--output", str(store_copy)]) == 0
    assert f"indexed {len(expected)} runs" in capsys.readouterr().out


def test_an_empty_index_file_is_rebuilt_not_taken_for_an_empty_store(store_copy, capsys):
    expected = {r["run_id"]: r["status"] for r in Store(store_copy).runs()}
    (store_copy / "calibench.db").write_bytes(b"")
    assert main(["status", "--output", str(store_copy)]) == 0
    assert "2 complete" in " ".join(capsys.readouterr().out.split())
    assert {r["run_id"]: r["status"] for r in Store(store_copy).runs()} == expected


def test_a_damaged_index_is_set_aside_and_rebuilt(store_copy, capsys):
    expected = {r["run_id"]: r["status"] for r in Store(store_copy).runs()}
    (store_copy / "calibench.db").write_bytes(b"not a database at all" * 100)
    assert main(["report", "--output", str(store_copy)]) == 2
    assert "status --rebuild" in one_error_line(capsys.readouterr().err)
    assert main(["status", "--rebuild", "--output", str(store_copy)]) == 0
    assert (store_copy / "calibench.db.damaged").read_bytes().startswith(b"not a database")
    assert {r["run_id"]: r["status"] for r in Store(store_copy).runs()} == expected


def test_rebuilt_index_keeps_failed_and_interrupted_runs(store_copy):
    store = Store(store_copy)
    failed, interrupted = specs_of(["focal", "brier"], 1)
    store.fail(store.claim(failed), "non-finite training loss (nan)", 3)
    store.interrupt(store.claim(interrupted))
    before = {r["run_id"]: (r["status"], r["error"]) for r in store.runs()}
    assert sorted(s for s, _ in before.values()) == [
        "complete",
        "complete",
        "failed",
        "interrupted",
    ]
    (store_copy / "calibench.db").unlink()
    assert store.rebuild_index() == 4
    assert {r["run_id"]: (r["status"], r["error"]) for r in store.runs()} == before
    assert before[failed.run_id] == ("failed", "epoch 3: non-finite training loss (nan)")


def test_a_rebuild_during_a_forced_retrain_keeps_its_lease(store_copy, gated):
    plugins, gate = gated
    args = ["run", "--plugins", str(plugins), "--methods", "gated", "--epochs", "1"]
    args += ["--set", f"gated.gate={gate}", "--device", "cpu", "--output", str(store_copy)]
    gate.touch()
    assert subprocess.run(cli(args), cwd=REPO, capture_output=True, timeout=400).returncode == 0
    gate.unlink()
    (run_dir,) = store_copy.glob("runs/*/*/gated/seed0-*")
    attempt = run_dir.with_name(run_dir.name + ".attempt")
    forced = subprocess.Popen(cli([*args, "--force"]), cwd=REPO, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: (attempt / "state.json").exists(), 240, "the forced retrain's claim")
        assert main(["status", "--rebuild", "--output", str(store_copy)]) == 0
        assert rows(store_copy / "calibench.db")["gated"]["owner"] == owner_id(forced.pid)
        (store_copy / "calibench.db").unlink()
        assert main(["status", "--output", str(store_copy)]) == 0
        assert rows(store_copy / "calibench.db")["gated"]["owner"] == owner_id(forced.pid)
        again = subprocess.run(cli([*args, "--force"]), cwd=REPO, capture_output=True, timeout=400)
        assert again.returncode == 0, again.stderr
        assert b"being trained by another live process" in again.stdout
        assert strict_json(attempt / "state.json")["owner"] == owner_id(forced.pid)
        gate.touch()
        out, _ = forced.communicate(timeout=400)
    finally:
        forced.kill()
    assert forced.returncode == 0 and b"done gated" in out
    assert rows(store_copy / "calibench.db")["gated"]["status"] == "complete"
    assert not attempt.exists()


# Forced retrains -------------------------------------------------------------------------


def test_interrupted_force_retrain_keeps_the_old_result(store_copy):
    store = Store(store_copy)
    spec = specs_of(["ce"], 1)[0]
    run_dir = store.run_dir(spec)
    names = ("metrics.json", "logits.npz", "log.csv", "best.pt", "last.pt", "config.json")
    old = {n: (run_dir / n).read_bytes() for n in names}
    attempt = run_dir.with_name(run_dir.name + ".attempt")

    with pytest.raises(KeyboardInterrupt):
        run_one(spec, store, StopAfter(1), force=True)
    assert {n: (run_dir / n).read_bytes() for n in names} == old
    assert store.status(spec, thorough=True) == "complete"
    assert strict_json(attempt / "state.json")["status"] == "interrupted"
    assert {"last.pt", "log.csv"} <= {p.name for p in attempt.iterdir()}
    assert run_one(spec, store).reason.startswith("already complete")

    progress = Recorder()
    outcome = run_one(spec, store, progress, force=True)
    assert outcome.status == "complete" and progress.started == [1]
    assert not attempt.exists() and not run_dir.with_name(run_dir.name + ".old").exists()
    new = strict_json(run_dir / "metrics.json")
    assert new["train_seconds"] == outcome.metrics["train_seconds"]
    assert new["train_seconds"] != json.loads(old["metrics.json"])["train_seconds"]
    assert (run_dir / "log.csv").read_bytes() != old["log.csv"]
    assert result_problem(run_dir, thorough=True) is None
    assert store.status(spec) == "complete"


def test_a_symlinked_attempt_folder_is_not_followed(store_copy, tmp_path):
    store = Store(store_copy)
    spec = specs_of(["ce"], 1)[0]
    run_dir = store.run_dir(spec)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not calibench's")
    attempt = run_dir.with_name(run_dir.name + ".attempt")
    attempt.symlink_to(elsewhere, target_is_directory=True)
    assert run_one(spec, store, force=True).status == "complete"
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]
    assert not attempt.exists() and not attempt.is_symlink()
    assert result_problem(run_dir, thorough=True) is None
