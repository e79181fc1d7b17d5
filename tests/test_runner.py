"""calibench/training/runner.py: one run, start to end. Failures inside a run fail that run and
the sweep goes on; a results folder that cannot be written, Ctrl-C and SIGTERM stop the
command; a process that lost its lease writes nothing more (docs/reliability.md)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from store_helpers import (
    EXPECTED_FAILURES,
    PLUGIN,
    PLUGIN_METHODS,
    REPO,
    StorageFault,
    cli,
    log_lines,
    one_error_line,
    rows,
    specs_of,
    strict_json,
    wait_for,
)

from calibench.cli import main
from calibench.registry import METHODS
from calibench.store.files import RunDir
from calibench.store.index import Store, result_problem
from calibench.store.lease import LEASE_ENV, owner_id
from calibench.training.runner import TERMINATED_EXIT, run_one

# Failures that stop a run, not the sweep -------------------------------------------------


def test_diverging_runs_fail_with_reason_and_epoch_and_the_sweep_goes_on(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--methods", "ce,ls", "--set", "training.lr=1e6", "--epochs", "2"]
    assert main([*argv, "--device", "cpu", "--output", str(out)]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "sweep: 2 failed" in text
    store = Store(out)
    for row in store.runs():
        assert row["status"] == "failed"
        assert row["error"].startswith("epoch 1: non-finite") and "diverged" in row["error"]
        state = strict_json(row["dir"] / "state.json")
        assert state["status"] == "failed" and state["epoch"] == 1
        assert not (row["dir"] / "metrics.json").exists()
    assert {r["method"] for r in store.runs()} == {"ce", "ls"}
    for path in out.rglob("*.json"):
        strict_json(path)
    again = main([*argv, "--device", "cpu", "--output", str(out)])
    text = " ".join(capsys.readouterr().out.split())
    assert again == 1 and "failed before (use --retry-failed" in text
    assert "sweep: 2 skipped (2 of them failed before)" in text


@pytest.fixture
def broken_plugins(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text(PLUGIN)
    yield folder
    for name in PLUGIN_METHODS:
        METHODS.unregister(name)
    sys.modules.pop("calibench_plugins.plugins.broken", None)


def test_broken_plugins_fail_their_runs_and_the_others_complete(tmp_path, broken_plugins):
    out = tmp_path / "out"
    argv = ["run", "--plugins", str(broken_plugins), "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--methods", "per_sample_loss,bare_tensor,ce", "--output", str(out)]) == 1
    found = rows(out / "calibench.db")
    assert {m: r["error"] for m, r in found.items() if r["status"] == "failed"} == (
        EXPECTED_FAILURES
    )
    assert found["ce"]["status"] == "complete"
    assert all(r["owner"] is None for r in found.values())


def test_an_oserror_inside_a_method_fails_its_run_not_the_sweep(tmp_path, broken_plugins, capsys):
    out = tmp_path / "out"
    argv = ["run", "--plugins", str(broken_plugins), "--epochs", "1", "--device", "cpu"]
    argv += ["--methods", "reads_a_missing_file,loses_its_socket,ce", "--output", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "sweep: 1 complete, 2 failed" in " ".join(captured.out.split())
    assert "calibench: error" not in captured.err
    found = rows(out / "calibench.db")
    assert found["ce"]["status"] == "complete"
    missing, reset = found["reads_a_missing_file"], found["loses_its_socket"]
    assert missing["status"] == reset["status"] == "failed"
    assert missing["error"].startswith("epoch 1: FileNotFoundError: [Errno 2]")
    assert reset["error"] == "epoch 1: ConnectionResetError: [Errno 104] Connection reset by peer"
    error = (out / missing["path"] / RunDir.ERROR).read_text()
    assert "calibench-side-file.txt" in error and "Traceback" in error
    assert main(argv) == 1
    assert "2 of them failed before" in " ".join(capsys.readouterr().out.split())


# A results folder that cannot be written stops the command -------------------------------


def test_output_under_a_file_is_one_message(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for command in (["run", "--methods", "ce"], ["report"], ["status"]):
        assert main([*command, "--output", str(tmp_path / "file" / "out")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(tmp_path / "file") in line


def test_read_only_output_folder_is_one_message(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    StorageFault(monkeypatch, out, errno.EACCES).active = True
    argv = ["run", "--methods", "ce", "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--output", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out / "calibench.db") in line and "writable" in line
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_run_folder_unwritable_mid_run_is_one_message_and_resumes(
    tmp_path, capsys, monkeypatch, code
):
    from calibench.cli.display import RichProgress

    out = tmp_path / "out"
    spec = specs_of(["ce"], 1)[0]
    run_dir = Store(out).run_dir(spec)
    fault = StorageFault(monkeypatch, run_dir, code)
    real_epoch = RichProgress.epoch

    def fill_disk(self, row):
        real_epoch(self, row)
        fault.active = True

    monkeypatch.setattr(RichProgress, "epoch", fill_disk)
    argv = ["run", "--methods", "ce", "--epochs", "1", "--device", "cpu", "--output", str(out)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(run_dir) in line and os.strerror(code) in line
    assert Store(out).status(spec) == "interrupted"
    log = log_lines(run_dir)

    fault.active = False
    monkeypatch.setattr(RichProgress, "epoch", real_epoch)
    assert main(argv) == 0
    assert log_lines(run_dir) == log
    assert result_problem(run_dir, thorough=True) is None


def test_report_on_a_read_only_store_is_one_message(store_copy, capsys, monkeypatch):
    StorageFault(monkeypatch, store_copy, errno.EACCES).active = True
    assert main(["report", "--output", str(store_copy)]) == 2
    assert str(store_copy / "report") in one_error_line(capsys.readouterr().err)
    assert not (store_copy / "report").exists()


# Leases: two commands, a takeover, a process paused past its lease -----------------------


def test_two_commands_on_one_output_train_each_run_once(tmp_path, gated):
    plugins, gate = gated
    out = tmp_path / "out"
    args = ["run", "--plugins", str(plugins), "--methods", "gated,ce", "--epochs", "1"]
    args += ["--set", f"gated.gate={gate}", "--device", "cpu", "--output", str(out)]
    first = subprocess.Popen(cli(args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "gated" in rows(out / "calibench.db"), 240, "the first command's claim")
        second = subprocess.run(cli(args), cwd=REPO, capture_output=True, timeout=400)
        gate.touch()
        first_out, first_err = first.communicate(timeout=400)
    finally:
        first.kill()
    assert (first.returncode, second.returncode) == (0, 0), (first_err, second.stderr)
    first_text = " ".join(first_out.decode().split())
    second_text = " ".join(second.stdout.decode().split())
    label = "/ digits / small_cnn / seed 0"
    assert f"skip gated {label}: being trained by another live process" in second_text
    assert f"done ce {label}" in second_text and f"done ce {label}" not in first_text
    assert f"done gated {label}" in first_text
    assert f"skip ce {label}: already complete" in first_text
    assert all(r["status"] == "complete" for r in rows(out / "calibench.db").values())


def test_a_run_whose_lease_was_taken_over_stops_after_its_epoch(tmp_path):
    import sqlite3

    from store_helpers import Recorder

    store = Store(tmp_path)
    spec = specs_of(["ce"], 1)[0]
    other = owner_id(os.getppid())

    class TakeOver(Recorder):
        def start(self, spec, first_epoch):
            with sqlite3.connect(store.db_path) as conn:
                conn.execute(
                    "UPDATE runs SET owner = ?, heartbeat = ?, lease = 'another'",
                    (other, time.time()),
                )

    outcome = run_one(spec, store, TakeOver())
    assert outcome.status == "skipped" and "another process took it over" in outcome.reason
    assert rows(store.db_path)["ce"]["owner"] == other
    assert not (store.run_dir(spec) / RunDir.BEST).exists()
    assert not (store.run_dir(spec) / RunDir.METRICS).exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP, /proc")
def test_a_process_paused_past_its_lease_leaves_the_completed_run_alone(tmp_path, gated):
    """Ctrl-Z, a suspended laptop or a paused VM: the paused command wakes after another one
    completed the run, and must not write into it."""
    plugins, gate = gated
    out = tmp_path / "out"
    args = ["run", "--plugins", str(plugins), "--methods", "gated", "--epochs", "1"]
    args += ["--set", "gated.steps=2", "--set", f"gated.gate={gate}", "--device", "cpu"]
    args += ["--output", str(out)]
    env = {**os.environ, LEASE_ENV: "4"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    paused = subprocess.Popen(cli(args), cwd=REPO, env=env, **pipes)
    try:
        wait_for(lambda: "gated" in rows(out / "calibench.db"), 240, "the first claim")
        os.kill(paused.pid, signal.SIGSTOP)
        stale = lambda: time.time() - rows(out / "calibench.db")["gated"]["heartbeat"] > 5  # noqa: E731
        wait_for(stale, 30, "the paused process's lease to go stale")
        gate.touch()
        second = subprocess.run(cli(args), cwd=REPO, env=env, capture_output=True, timeout=400)
        assert second.returncode == 0, second.stderr
        assert b"done gated" in second.stdout
        (run_dir,) = (out / "runs").glob("*/*/gated/*")
        completed = {p.name: p.read_bytes() for p in run_dir.iterdir()}
        os.kill(paused.pid, signal.SIGCONT)
        text, err = paused.communicate(timeout=400)
    finally:
        paused.kill()
    assert paused.returncode == 0, err
    assert "another process took it over" in " ".join(text.decode().split())
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == completed
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]
    assert rows(out / "calibench.db")["gated"]["status"] == "complete"
    assert result_problem(run_dir, thorough=True) is None


# SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_marks_the_run_interrupted_and_exits_143(tmp_path, gated):
    plugins, gate = gated
    out = tmp_path / "out"
    args = ["run", "--plugins", str(plugins), "--methods", "gated", "--epochs", "1"]
    args += ["--set", f"gated.gate={gate}", "--device", "cpu", "--output", str(out)]
    command = subprocess.Popen(cli(args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "gated" in rows(out / "calibench.db"), 240, "the claim")
        command.send_signal(signal.SIGTERM)
        stdout, err = command.communicate(timeout=120)
    finally:
        command.kill()
    assert command.returncode == TERMINATED_EXIT == 143, (stdout, err)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("calibench: terminated (SIGTERM)"), err
    row = rows(out / "calibench.db")["gated"]
    assert (row["status"], row["owner"]) == ("interrupted", None)
    assert strict_json(out / row["path"] / RunDir.STATE)["status"] == "interrupted"
