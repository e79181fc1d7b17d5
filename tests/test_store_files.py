"""calibench/store/files.py: atomic writes, the run folder's file names (RunDir), checksums
recorded on write and checked on read, and failed writes as one message naming the file
(docs/reliability.md)."""

from __future__ import annotations

import ast
import errno
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from store_helpers import REPO, flip_byte, one_error_line, specs_of

from calibench.cli import main
from calibench.store.files import DamagedFile, RunDir, StorageError, write_json
from calibench.store.index import Store, result_problem

RUN_FILES = {
    RunDir.CONFIG,
    RunDir.STATE,
    RunDir.SPLIT,
    RunDir.LOG,
    RunDir.LAST,
    RunDir.PREVIOUS,
    RunDir.BEST,
    RunDir.LOGITS,
    RunDir.METRICS,
    RunDir.ERROR,
    RunDir.CHECKSUMS,
}


def _spelled_names(path: Path) -> list[str]:
    """String constants of ``path`` (docstrings aside) that are a run file's name or the start
    of a shift file's name."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in docstrings:
            continue
        text = node.value
        if text in RUN_FILES or text.startswith(RunDir.SHIFT_PREFIX) or "*.npz" in text:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text!r}")
    return found


def test_run_file_names_are_spelled_only_in_run_dir():
    own = REPO / "calibench" / "store" / "files.py"
    modules = [*(REPO / "calibench").rglob("*.py"), *(REPO / "methods").glob("*.py")]
    spelled = [hit for path in modules if path != own for hit in _spelled_names(path)]
    assert not spelled, "run file names outside RunDir:\n" + "\n".join(spelled)
    assert _spelled_names(own), "the check must see the names where they are spelled"


def test_writes_record_a_checksum_that_reads_check(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_torch(RunDir.LAST, {"w": torch.arange(1000.0)})
    run.write_json(RunDir.METRICS, {"acc": 0.5})
    run.write_json(RunDir.STATE, {"status": "running"})
    sums = json.loads((run / RunDir.CHECKSUMS).read_text())["sha256"]
    assert set(sums) == {RunDir.LAST, RunDir.METRICS}
    assert torch.equal(run.load_torch(RunDir.LAST)["w"], torch.arange(1000.0))
    assert run.problem(RunDir.LAST) is None

    flip_byte(run / RunDir.LAST, 0.7)
    torch.load(run / RunDir.LAST, weights_only=True)  # torch itself notices nothing
    with pytest.raises(DamagedFile, match="does not match the sha256"):
        run.load_torch(RunDir.LAST)
    assert "does not match the sha256" in run.problem(RunDir.LAST)
    assert run.read_json(RunDir.METRICS) == {"acc": 0.5}
    assert run.problem(RunDir.BEST) == f"{RunDir.BEST} is missing"


def test_rotating_a_checkpoint_takes_its_checksum_along(tmp_path):
    run = RunDir(tmp_path)
    run.save_torch(RunDir.LAST, {"epoch": 1})
    run.rotate(RunDir.LAST, RunDir.PREVIOUS)
    run.save_torch(RunDir.LAST, {"epoch": 2})
    assert run.load_torch(RunDir.PREVIOUS) == {"epoch": 1}
    assert run.load_torch(RunDir.LAST) == {"epoch": 2}
    (run / RunDir.CHECKSUMS).unlink()
    run.rotate(RunDir.LAST, RunDir.PREVIOUS)
    assert run.load_torch(RunDir.PREVIOUS) == {"epoch": 2} and run.checksums() == {}


def test_files_written_before_checksums_load_unverified(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / RunDir.BEST)
    np.savez(tmp_path / RunDir.LOGITS, val_logits=np.zeros((2, 3)))
    run = RunDir(tmp_path)
    assert torch.equal(run.load_torch(RunDir.BEST)["w"], torch.ones(3))
    assert run.problem(RunDir.BEST) is None and run.problem(RunDir.LOGITS) is None
    data = (tmp_path / RunDir.LOGITS).read_bytes()
    (tmp_path / RunDir.LOGITS).write_bytes(data[: len(data) // 2])
    assert run.problem(RunDir.LOGITS).startswith(f"{RunDir.LOGITS} is damaged (BadZipFile")


def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """A full disk often fails in write or fsync, where the OSError names no file."""
    run = RunDir(tmp_path)
    run.write_text(RunDir.LOG, "epoch\n1\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError) as caught:
        run.write_text(RunDir.LOG, "epoch\n1\n2\n")
    assert str(tmp_path / RunDir.LOG) in str(caught.value)
    assert "No space left on device" in str(caught.value)
    assert (tmp_path / RunDir.LOG).read_text() == "epoch\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [RunDir.CHECKSUMS, RunDir.LOG]
    with pytest.raises(StorageError, match="x.json: No space left"):
        write_json(tmp_path / "x.json", {})


def test_a_full_disk_mid_run_is_one_message_naming_the_file(tmp_path, capsys, monkeypatch):
    from calibench.cli.display import RichProgress

    out = tmp_path / "out"
    run_dir = Store(out).run_dir(specs_of(["ce"], 1)[0])
    real_fsync, real_epoch = os.fsync, RichProgress.epoch
    full = {"now": False}

    def fsync(fd: int) -> None:
        if full["now"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    def fill_disk(self, row):
        real_epoch(self, row)
        full["now"] = True

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(RichProgress, "epoch", fill_disk)
    argv = ["run", "--methods", "ce", "--epochs", "1", "--device", "cpu", "--output", str(out)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write {run_dir / RunDir.LOGITS}: No space left on device" in line


def test_the_result_problem_names_what_is_wrong(tmp_path):
    assert result_problem(tmp_path) == "metrics.json is missing"
    (tmp_path / "metrics.json").write_text("{")
    assert result_problem(tmp_path) == "metrics.json is damaged"
    (tmp_path / "metrics.json").write_text("{}")
    assert result_problem(tmp_path).startswith("logits.npz is damaged (FileNotFoundError")
    np.savez(tmp_path / "logits.npz", val_logits=np.zeros(2))
    assert result_problem(tmp_path) == "logits.npz lacks val_labels, test_logits, test_labels"
    run = RunDir(tmp_path)
    arrays = {name: np.zeros(2) for name in RunDir.RESULT_ARRAYS}
    run.save_arrays(RunDir.LOGITS, **arrays)
    run.write_json(RunDir.METRICS, {"acc": 1.0})
    assert result_problem(tmp_path, thorough=True) is None
    (tmp_path / "metrics.json").write_text('{"acc": 0.0}')
    assert result_problem(tmp_path) is None
    assert "metrics.json is damaged: it does not match" in result_problem(tmp_path, thorough=True)


# Shift files and the selected weights, as `calibench evaluate` reads them --------------------

EVALUATE = ["evaluate", "--shift", "corrupt", "--corruptions", "gaussian_noise", "--device", "cpu"]


def test_evaluate_recomputes_a_damaged_shift_file(store_copy, capsys):
    argv = [*EVALUATE, "--methods", "ce", "--output", str(store_copy)]
    assert main(argv) == 0
    run = RunDir(Store(store_copy).run_dir(specs_of(["ce"], 1)[0]))
    (name,) = [p.name for p in run.shift_files().values()]
    good = (run / name).read_bytes()
    capsys.readouterr()

    assert main(argv) == 0
    assert "shift" not in capsys.readouterr().out
    (run / name).write_bytes(good[: len(good) // 2])
    assert main(argv) == 0
    assert f"-> {name}" in capsys.readouterr().out
    assert (run / name).read_bytes() == good
    assert run.problem(name) is None and name in run.checksums()


def test_a_flipped_bit_in_best_pt_is_reported_not_used(store_copy, capsys):
    run_dir = Store(store_copy).run_dir(specs_of(["ce"], 1)[0])
    flip_byte(run_dir / RunDir.BEST, 0.6)
    torch.load(run_dir / RunDir.BEST, weights_only=True)
    assert main([*EVALUATE, "--methods", "ce", "--output", str(store_copy)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(run_dir / RunDir.BEST) in line and "DamagedFile" in line
    assert not RunDir(run_dir).shift_files()


def test_a_store_written_without_checksums_still_reports_and_resumes(store_copy, capsys):
    store = Store(store_copy)
    run_dir = store.run_dir(specs_of(["ce"], 1)[0])
    metrics = json.loads((run_dir / RunDir.METRICS).read_text())
    for folder in store_copy.glob("runs/*/*/*/*"):
        (folder / RunDir.CHECKSUMS).unlink()
    assert main(["report", "--output", str(store_copy)]) == 0
    (run_dir / RunDir.METRICS).unlink()
    argv = ["run", "--methods", "ce", "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--output", str(store_copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "done ce" in out and "unreadable" not in out
    again = json.loads((run_dir / RunDir.METRICS).read_text())
    for key in ("acc", "ece", "nll", "temperature", "best_epoch"):
        assert again[key] == metrics[key]
    sums = RunDir(run_dir).checksums()
    assert RunDir.METRICS in sums and RunDir.LAST not in sums  # the old checkpoint: unverified


def test_a_committed_store_reads_without_checksums(tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(REPO / "results" / "digits-3seeds" / "runs", copy / "runs")
    shutil.copy(REPO / "results" / "digits-3seeds" / "calibench.db", copy / "calibench.db")
    found = Store(copy).runs()
    assert len(found) == 39 and all(r["status"] == "complete" for r in found)
    for row in found[:3]:
        assert RunDir(row["dir"]).result_problem(thorough=True) is None
        with np.load(io.BytesIO(RunDir(row["dir"]).read_checked(RunDir.LOGITS))) as f:
            assert f["test_logits"].shape[0] == f["test_labels"].shape[0]
