"""A sweep that survives anything: diverging runs, damaged checkpoints and results, unwritable
folders, broken plugins, killed and concurrent commands, interrupted forced retrains and
unbounded settings (docs/reliability.md).

Tests run as root, which file permissions do not stop, so an unwritable folder is simulated in
this process by :class:`StorageFault`: it makes writes under one folder raise the OSError a
read-only or full disk raises, and opens SQLite databases there read-only.
"""

from __future__ import annotations

import builtins
import csv
import errno
import io
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibench.cli import main
from calibench.config import DEFAULT_CONFIG, Overrides, build_run_specs, load_config
from calibench.errors import CalibenchError
from calibench.registry import METHODS
from calibench.spec import TRAINING_KEYS, RunSpec
from calibench.store.index import LEASE_SECONDS, Store, owner_alive, owner_id, result_problem
from calibench.training.runner import run_one

REPO = Path(__file__).resolve().parent.parent


def specs_of(methods: list[str], epochs: int) -> list[RunSpec]:
    """The run specs `calibench run --methods ... --epochs ... --device cpu` trains."""
    overrides = Overrides(methods=methods, epochs=epochs, device="cpu")
    return build_run_specs(load_config(DEFAULT_CONFIG), overrides)


def strict_json(path: Path) -> object:
    """Parse a JSON file, rejecting the NaN/Infinity tokens strict parsers reject."""

    def reject(token: str) -> None:
        raise AssertionError(f"{path} holds the non-JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def one_error_line(err: str) -> str:
    """The single error message of a failed command (no traceback, nothing else)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("calibench: error: "), err
    return lines[0]


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "calibench.cli", *args]


def rows(db: Path) -> dict[str, dict]:
    """The index rows by method, read without taking any lock a writer needs."""
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        try:
            found = conn.execute("SELECT * FROM runs").fetchall()
        except sqlite3.OperationalError:
            return {}
    return {r["method"]: dict(r) for r in found}


class Recorder:
    """A progress display that records what the runner tells it."""

    def __init__(self, stop_at_start: bool = False) -> None:
        self.started: list[int] = []
        self.warnings: list[str] = []
        self.stop_at_start = stop_at_start

    def start(self, spec, first_epoch):
        self.started.append(first_epoch)
        if self.stop_at_start:
            raise KeyboardInterrupt

    def warn(self, message):
        self.warnings.append(message)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class StopAfter(Recorder):
    """Interrupts the run after a given epoch, as Ctrl-C would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.stop_epoch = epoch

    def epoch(self, row):
        if row["epoch"] == self.stop_epoch:
            raise KeyboardInterrupt


class StorageFault:
    """While ``active``, writing under ``root`` fails with ``code``: EACCES (a read-only
    folder: creating, replacing or removing files, and SQLite opens its databases read-only)
    or ENOSPC (a full disk: the final rename of every atomic write fails)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
        self.root = str(root.resolve())
        self.code = code
        self.active = False
        real_open, real_os_open = builtins.open, os.open
        real_connect = sqlite3.connect

        def hit(path) -> bool:
            if not self.active or isinstance(path, int):
                return False
            return os.path.abspath(os.fsdecode(path)).startswith(self.root)

        def fail(path) -> None:
            raise OSError(self.code, os.strerror(self.code), os.fsdecode(path))

        def wrap(real, read_only_ok: bool = False):
            def fake(path, *args, **kwargs):
                if hit(path) and not read_only_ok:
                    fail(path)
                return real(path, *args, **kwargs)

            return fake

        def fake_open(file, mode="r", *args, **kwargs):
            if self.code == errno.EACCES and hit(file) and set(mode) & set("wax+"):
                fail(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if self.code == errno.EACCES and hit(path) and writes:
                fail(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_replace(src, dst, *args, **kwargs):
            if hit(dst):
                fail(dst)
            return os.rename(src, dst, *args, **kwargs)

        def fake_connect(database, *args, **kwargs):
            if self.code == errno.EACCES and hit(database):
                return real_connect(f"file:{database}?mode=ro", *args, uri=True, **kwargs)
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(sqlite3, "connect", fake_connect)
        if code == errno.EACCES:
            monkeypatch.setattr(builtins, "open", fake_open)
            monkeypatch.setattr(io, "open", fake_open)
            monkeypatch.setattr(os, "open", fake_os_open)
            for name in ("mkdir", "unlink", "remove", "rmdir"):
                monkeypatch.setattr(os, name, wrap(getattr(os, name)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """ce and ls trained for one epoch on digits by `calibench run`."""
    out = tmp_path_factory.mktemp("trained")
    argv = ["run", "--methods", "ce,ls", "--epochs", "1", "--device", "cpu", "--output", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture
def store_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    return copy


# 1. Diverging runs -------------------------------------------------------------------------


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


@pytest.mark.parametrize("setting", ["training.lr=inf", "training.weight_decay=inf"])
def test_infinite_training_settings_are_rejected(tmp_path, capsys, setting):
    argv = ["run", "--methods", "ce", "--set", setting, "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "must be a finite number, got inf" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_non_finite_metrics_are_stored_as_strict_json(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 1)[0]
    claim = store.claim(spec)
    store.finish(claim, {"acc": 0.5, "nll": math.inf, "ece": math.nan})
    metrics = strict_json(store.run_dir(spec) / "metrics.json")
    assert metrics == {"acc": 0.5, "nll": None, "ece": None, "non_finite": ["ece", "nll"]}
    with sqlite3.connect(store.db_path) as conn:
        (column,) = conn.execute("SELECT metrics FROM runs").fetchone()
    assert "NaN" not in column and "Infinity" not in column
    assert json.loads(column)["non_finite"] == ["ece", "nll"]


# 2. Damaged checkpoints --------------------------------------------------------------------


def _log(run_dir: Path) -> list[str]:
    return (run_dir / "log.csv").read_text().splitlines()


def test_damaged_checkpoints_fall_back_to_the_previous_one_or_restart(tmp_path, capsys):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 2)[0]
    first = run_one(spec, store)
    run_dir = store.run_dir(spec)
    log = _log(run_dir)

    (run_dir / "last.pt").write_bytes(b"garbage")
    (run_dir / "metrics.json").unlink()
    progress = Recorder()
    resumed = run_one(spec, store, progress)
    assert resumed.status == "complete" and progress.started == [2]
    assert any("last.pt is unreadable" in w for w in progress.warnings)
    assert _log(run_dir)[:2] == log[:2] and len(_log(run_dir)) == 3
    for key in ("acc", "ece", "nll", "temperature"):
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
    restarted = _log(run_dir)
    assert len(restarted) == 3 and restarted[1] != log[1]
    assert [r.split(",")[0] for r in restarted[1:]] == ["1", "2"]
    again = strict_json(run_dir / "metrics.json")
    for key in ("acc", "ece", "nll", "temperature"):
        assert again[key] == first.metrics[key]


# 3. Unwritable output ----------------------------------------------------------------------


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
    log = _log(run_dir)

    fault.active = False
    monkeypatch.setattr(RichProgress, "epoch", real_epoch)
    assert main(argv) == 0
    assert _log(run_dir) == log
    assert result_problem(run_dir, thorough=True) is None


def test_report_on_a_read_only_store_is_one_message(store_copy, capsys, monkeypatch):
    StorageFault(monkeypatch, store_copy, errno.EACCES).active = True
    assert main(["report", "--output", str(store_copy)]) == 2
    assert str(store_copy / "report") in one_error_line(capsys.readouterr().err)
    assert not (store_copy / "report").exists()


# 4. A damaged complete run -----------------------------------------------------------------


def test_damaged_complete_run_is_reported_listed_and_recomputed(store_copy, capsys):
    store = Store(store_copy)
    ce, ls = (store.run_dir(s) for s in specs_of(["ce", "ls"], 1))
    before = {d: strict_json(d / "metrics.json") for d in (ce, ls)}
    logs = {d: _log(d) for d in (ce, ls)}
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
        assert _log(run_dir) == logs[run_dir]
        after = strict_json(run_dir / "metrics.json")
        for key in ("acc", "ece", "nll", "temperature", "best_epoch"):
            assert after[key] == before[run_dir][key]
    assert main(["report", "--output", str(store_copy)]) == 0


def test_report_without_complete_results_exits_2(store_copy, capsys):
    for run_dir in store_copy.glob("runs/*/*/*/*"):
        (run_dir / "logits.npz").write_bytes(b"")
    assert main(["report", "--output", str(store_copy)]) == 2
    assert "no complete runs" in capsys.readouterr().err


# 5. Broken plugins -------------------------------------------------------------------------

PLUGIN = '''
import os
import torch.nn.functional as F
from calibench import Loss, Method, register_method

@register_method("per_sample_loss")
class PerSampleLoss(Method):
    """Returns one loss per sample instead of their mean."""
    def loss(self, model, x, y):
        return Loss(F.cross_entropy(model(x), y, reduction="none"))

@register_method("bare_tensor")
class BareTensor(Method):
    """Returns a tensor, not a Loss."""
    def loss(self, model, x, y):
        return F.cross_entropy(model(x), y)

@register_method("kills_its_process")
class KillsItsProcess(Method):
    """Ends its process at once, as the kernel's out-of-memory killer would."""
    def loss(self, model, x, y):
        os._exit(9)
'''
PLUGIN_METHODS = ("per_sample_loss", "bare_tensor", "kills_its_process")


@pytest.fixture
def broken_plugins(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text(PLUGIN)
    yield folder
    for name in PLUGIN_METHODS:
        METHODS.unregister(name)
    sys.modules.pop("calibench_plugins.plugins.broken", None)


EXPECTED_FAILURES = {
    "per_sample_loss": "epoch 1: method per_sample_loss: Loss.total must be a scalar tensor, "
    "got (64,)",
    "bare_tensor": "epoch 1: method bare_tensor: loss() returned Tensor, not calibench.Loss",
}


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


def test_broken_plugins_under_the_processes_executor(tmp_path, broken_plugins, capsys):
    out = tmp_path / "out"
    methods = "per_sample_loss,bare_tensor,kills_its_process,ce"
    argv = ["run", "--plugins", str(broken_plugins), "--epochs", "1", "--device", "cpu"]
    argv += ["--executor", "processes", "--devices", "cpu,cpu", "--methods", methods]
    assert main([*argv, "--output", str(out)]) == 1
    found = rows(out / "calibench.db")
    assert found["ce"]["status"] == "complete"
    assert {m: found[m]["error"] for m in EXPECTED_FAILURES} == EXPECTED_FAILURES
    killed = found["kills_its_process"]
    assert killed["status"] == "failed" and "worker process died (exit code 9" in killed["error"]
    assert all(r["owner"] is None for r in found.values())
    assert "sweep: 1 complete, 3 failed" in " ".join(capsys.readouterr().out.split())


# 6. The parent of the workers killed; 7. two commands on the same output ------------------

GATED = '''
import os
import time
import torch.nn.functional as F
from calibench import Loss, Method, register_method

@register_method("gated")
class Gated(Method):
    """Cross-entropy that, after `steps` training steps, waits until the file `gate` exists:
    a run that is surely still training when a test acts on it."""
    steps: int = 0
    gate: str = ""

    def loss(self, model, x, y):
        self.calls = getattr(self, "calls", 0) + 1
        while self.calls > self.steps and not os.path.exists(self.gate):
            time.sleep(0.05)
        ce = F.cross_entropy(model(x), y)
        return Loss(ce, {"ce": ce})
'''


@pytest.fixture
def gated(tmp_path):
    """A plugin folder with the method ``gated``, and the path of its gate file."""
    folder = tmp_path / "gated_plugin"
    folder.mkdir()
    (folder / "gated.py").write_text(GATED)
    yield folder, tmp_path / "gate"
    METHODS.unregister("gated")
    sys.modules.pop("calibench_plugins.gated_plugin.gated", None)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX"
    except OSError:
        return True


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _all_rows(out: Path) -> list[dict]:
    db = out / "calibench.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY seed")]
        except sqlite3.OperationalError:
            return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_kills_its_workers_and_a_rerun_takes_over(tmp_path, gated):
    from calibench.data import load_dataset
    from calibench.plugins import load_plugin_dir

    plugins, gate = gated
    out = tmp_path / "out"
    batch = specs_of(["ce"], 1)[0].training.batch_size
    sets = [f"gated.steps={len(load_dataset('digits', '', False, 0).train) // batch}"]
    sets.append(f"gated.gate={gate}")
    args = ["run", "--plugins", str(plugins), "--methods", "gated", "--seeds", "0,1"]
    args += ["--epochs", "2", "--device", "cpu", "--output", str(out)]
    args += ["--executor", "processes", "--devices", "cpu,cpu"]
    args += [a for s in sets for a in ("--set", s)]
    log = open(tmp_path / "parent.log", "wb")  # noqa: SIM115
    parent = subprocess.Popen(cli(args), cwd=REPO, stdout=log, stderr=log)
    try:

        def both_in_their_second_epoch() -> bool:
            assert parent.poll() is None, (tmp_path / "parent.log").read_text()
            return [r["epoch"] for r in _all_rows(out)] == [1, 1]

        _wait_for(both_in_their_second_epoch, 240, "both workers to finish epoch 1")
        owners = [r["owner"] for r in _all_rows(out)]
        workers = [int(o.rpartition(":")[2]) for o in owners]
        assert all(o.startswith(f"{socket.gethostname()}:") for o in owners)
        assert len(set(workers)) == 2 and parent.pid not in workers
        assert not any(map(_gone, workers))
    finally:
        parent.kill()
        parent.wait()
        log.close()
    try:
        _wait_for(lambda: all(map(_gone, workers)), 10, "the workers to die with their parent")
    finally:
        for pid in workers:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)

    load_plugin_dir(plugins)
    store = Store(out)
    overrides = Overrides(methods=["gated"], seeds=[0, 1], epochs=2, sets=sets, device="cpu")
    for spec in build_run_specs(load_config(DEFAULT_CONFIG), overrides):
        assert store.status(spec) == "interrupted"
        progress = Recorder(stop_at_start=True)
        with pytest.raises(KeyboardInterrupt):
            run_one(spec, store, progress)
        assert progress.started == [2]


def test_two_commands_on_one_output_train_each_run_once(tmp_path, gated):
    plugins, gate = gated
    out = tmp_path / "out"
    args = ["run", "--plugins", str(plugins), "--methods", "gated,ce", "--epochs", "1"]
    args += ["--set", f"gated.gate={gate}", "--device", "cpu", "--output", str(out)]
    first = subprocess.Popen(cli(args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: "gated" in rows(out / "calibench.db"), 240, "the first command's claim")
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


def test_a_live_lease_is_respected_and_a_dead_or_stale_one_taken_over(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 1)[0]
    assert not isinstance(store.claim(spec), str)
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


def test_a_run_whose_lease_was_taken_over_stops_after_its_epoch(tmp_path):
    store = Store(tmp_path)
    spec = specs_of(["ce"], 1)[0]
    other = owner_id(os.getppid())

    class TakeOver(Recorder):
        def start(self, spec, first_epoch):
            with sqlite3.connect(store.db_path) as conn:
                conn.execute("UPDATE runs SET owner = ?, heartbeat = ?", (other, time.time()))

    outcome = run_one(spec, store, TakeOver())
    assert outcome.status == "skipped" and "another process took it over" in outcome.reason
    assert rows(store.db_path)["ce"]["owner"] == other
    assert not (store.run_dir(spec) / "metrics.json").exists()


def test_owner_alive():
    now = time.time()
    assert owner_alive(owner_id(), now)
    assert not owner_alive(owner_id(), now - LEASE_SECONDS - 1)
    assert not owner_alive(owner_id(), None) and not owner_alive(None, now)
    assert owner_alive("some-other-host:1", now)
    assert not owner_alive("some-other-host:1", now - LEASE_SECONDS - 1)


# 8. An interrupted forced retrain ----------------------------------------------------------


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


# 9. Unbounded values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("training.n_bins=1000000000000", "n_bins must be in [1, 1000]"),
        ("rankmixup_mrl.margin=inf", "margin must be a finite number, got inf"),
    ],
)
def test_unbounded_values_are_one_message(tmp_path, capsys, setting, message):
    argv = ["run", "--methods", "rankmixup_mrl", "--set", setting]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# 10. Smaller failures ----------------------------------------------------------------------


def test_run_ids_in_summaries_are_not_swallowed_as_markup():
    from rich.console import Console

    from calibench.report.table import Cell, Row, Table, markdown, terminal, text_column

    table = Table("digits / small_cnn", [text_column("method")], [Row([Cell("ce [abc123]")])])
    console = Console(file=io.StringIO(), width=200)
    for part in terminal(table, 200):
        console.print(part)
    assert "ce [abc123]" in console.file.getvalue()
    assert "| ce [abc123] |" in markdown(table)
    piped = Table("t", [text_column("x")], [Row([Cell("a | b")])])
    assert "| a \\| b |" in markdown(piped)


def test_negative_seeds_blame_the_command_line(tmp_path, capsys):
    assert main(["run", "--seeds", "-1", "--output", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--seeds must be" in line and "preset" not in line
    assert not (tmp_path / "out").exists()


def test_report_and_status_rebuild_a_missing_index(store_copy, capsys):
    expected = {r["run_id"]: r["status"] for r in Store(store_copy).runs()}
    (store_copy / "calibench.db").unlink()
    assert main(["report", "--output", str(store_copy)]) == 0
    with open(store_copy / "report" / "results.csv") as fh:
        assert len(fh.read().splitlines()) == 1 + len(expected)
    assert {r["run_id"]: r["status"] for r in Store(store_copy).runs()} == expected
    assert main(["status", "--rebuild", "--output", str(store_copy)]) == 0
    assert f"indexed {len(expected)} runs" in capsys.readouterr().out


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


@pytest.mark.parametrize(
    "argv",
    [
        ["--datasets", "cifar10", "--data-root", "{tmp}/nodata"],
        ["--set", "training.lr=fast,"],
        ["--set", "ce.nope=1"],
        ["--seeds", str(2**64)],
        [
            "--executor",
            "processes",
            "--devices",
            "cpu",
            "--datasets",
            "cifar10",
            "--data-root",
            "{tmp}/nodata",
        ],
    ],
)
def test_a_rejected_command_creates_nothing(tmp_path, capsys, argv):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = tmp_path / "out"
    assert main(["run", "--methods", "ce", *argv, "--device", "cpu", "--output", str(out)]) == 2
    one_error_line(capsys.readouterr().err)
    assert not out.exists()


# Property: arbitrary settings are run specs or one clear error -----------------------------


def _toml(value: object) -> str:
    """``value`` as a TOML literal (``inf``/``nan`` included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


SCALARS = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=6,
)
PLAUSIBLE = st.one_of(
    st.integers(0, 5),
    st.floats(0.01, 0.99),
    st.sampled_from(["fp32", "nll", "ece_grid", ["digits"], ["small_cnn"], [0, 1], [0.5]]),
)
"""Values that are often valid, so that many examples get as far as building run specs."""
VALUES = PLAUSIBLE | VALUES
TRAINING = st.sampled_from([*sorted(TRAINING_KEYS), "bogus"])
HPARAMS = st.sampled_from(
    ["rankmixup_mrl.margin", "rankmixup_mndcg.num_mixup", "focal.gamma", "ls.alpha", "ce.x"]
)
SETS = st.lists(
    st.one_of(
        st.tuples(TRAINING.map(lambda k: f"training.{k}"), VALUES.map(_toml)),
        st.tuples(HPARAMS, VALUES.map(_toml)),
        st.tuples(st.text(max_size=12), st.text(max_size=12)),
    ),
    max_size=3,
).map(lambda pairs: [f"{k}={v}" for k, v in pairs])
METHOD_TABLES = st.dictionaries(
    st.sampled_from(["rankmixup_mrl", "focal", "ce", "nope"]),
    st.dictionaries(st.sampled_from(["margin", "alpha", "gamma", "num_mixup", "x"]), VALUES)
    | VALUES,
    max_size=2,
)
GOOD_NAMES = st.sampled_from([["digits"], "digits", ["small_cnn", "tiny_cnn"], []])
NAMES = st.one_of(GOOD_NAMES, GOOD_NAMES, st.deferred(lambda: VALUES))
PRESET = st.fixed_dictionaries(
    {"methods": st.just(["ce", "rankmixup_mrl", "rankmixup_mndcg", "focal", "ls"])},
    optional={
        "hparams": METHOD_TABLES,
        "seeds": st.one_of(st.lists(st.integers(0, 3), max_size=2), st.deferred(lambda: VALUES)),
        **{k: NAMES for k in ("datasets", "ood", "backbones")},
        **{k: VALUES for k in ("epochs", "lr")},
    },
)


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    sets=SETS,
    training=st.dictionaries(TRAINING, VALUES, max_size=3),
    digits=st.dictionaries(st.sampled_from(["backbone", "epochs", "hparams", "lr"]), VALUES)
    | VALUES,
    preset=PRESET,
    seeds=st.none() | st.lists(st.integers(), max_size=2) | st.just([0]),
    as_file=st.booleans(),
)
def test_arbitrary_settings_give_run_specs_or_one_clear_error(
    tmp_path_factory, sets, training, digits, preset, seeds, as_file
):
    config = {
        "default_preset": "p",
        "training": training,
        "datasets": {"digits": digits},
        "presets": {"p": preset},
    }
    try:
        if as_file:
            path = tmp_path_factory.mktemp("toml") / "benchmark.toml"
            text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in config.items())
            path.write_text(text)
            config = load_config(path)
        specs = build_run_specs(config, Overrides(sets=sets, seeds=seeds))
    except CalibenchError as exc:
        assert str(exc).strip()
        return
    for spec in specs:
        text = json.dumps(spec.to_dict(), allow_nan=False)
        assert RunSpec.from_dict(json.loads(text)) == spec
        assert 1 <= spec.training.n_bins <= 1000 and spec.seed >= 0


def test_result_problem_names_what_is_wrong(tmp_path):
    assert result_problem(tmp_path) == "metrics.json is missing"
    (tmp_path / "metrics.json").write_text("{")
    assert result_problem(tmp_path) == "metrics.json is damaged"
    (tmp_path / "metrics.json").write_text("{}")
    assert result_problem(tmp_path).startswith("logits.npz is damaged (FileNotFoundError")
    np.savez(tmp_path / "logits.npz", val_logits=np.zeros(2))
    assert result_problem(tmp_path) == "logits.npz lacks val_labels, test_logits, test_labels"
