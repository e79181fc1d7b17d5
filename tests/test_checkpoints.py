"""calibench/training/checkpoints.py: a resume takes the newest checkpoint that reads back
intact (its recorded sha256 included), then the one before it, then restarts
(docs/reliability.md, "Checkpoints")."""

from __future__ import annotations

import torch
from store_helpers import Recorder, flip_byte, log_lines, specs_of, strict_json

from calibench.cli import main
from calibench.store.files import RunDir
from calibench.store.index import Store
from calibench.training.runner import run_one

SAME = ("acc", "ece", "nll", "temperature", "best_epoch")


def test_damaged_checkpoints_fall_back_to_the_previous_one_or_restart(tmp_path, capsys):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 2)[0]
    first = run_one(spec, store)
    run_dir = store.run_dir(spec)
    log = log_lines(run_dir)

    (run_dir / "last.pt").write_bytes(b"garbage")
    (run_dir / "metrics.json").unlink()
    progress = Recorder()
    resumed = run_one(spec, store, progress)
    assert resumed.status == "complete" and progress.started == [2]
    assert any("last.pt is unreadable" in w for w in progress.warnings)
    assert log_lines(run_dir)[:2] == log[:2] and len(log_lines(run_dir)) == 3
    for key in SAME:
        assert resumed.metrics[key] == first.metrics[key]

    for name in ("last.pt", "last.prev.pt"):
        (run_dir / name).write_bytes(b"\x80\x02garbage")
    (run_dir / "metrics.json").unlink()
    argv = ["run", "--methods", "ce", "--epochs", "2", "--device", "cpu"]
    assert main([*argv, "--output", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())
    assert "last.prev.pt is unreadable" in out and "restarts from epoch 1" in out
    assert "Traceback" not in captured.out + captured.err
    restarted = log_lines(run_dir)
    assert len(restarted) == 3 and restarted[1] != log[1]
    assert [r.split(",")[0] for r in restarted[1:]] == ["1", "2"]
    again = strict_json(run_dir / "metrics.json")
    for key in SAME:
        assert again[key] == first.metrics[key]


def test_a_flipped_bit_in_last_pt_is_caught_and_the_previous_checkpoint_used(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 2)[0]
    first = run_one(spec, store)
    run_dir = store.run_dir(spec)
    flip_byte(run_dir / RunDir.LAST)
    torch.load(run_dir / RunDir.LAST, weights_only=True)  # torch.load checks no CRC
    (run_dir / RunDir.METRICS).unlink()
    progress = Recorder()
    resumed = run_one(spec, store, progress)
    assert resumed.status == "complete" and progress.started == [2]
    (warning,) = [w for w in progress.warnings if "checkpoint" in w]
    assert "last.pt is unreadable (DamagedFile" in warning and "sha256" in warning
    for key in SAME:
        assert resumed.metrics[key] == first.metrics[key]
