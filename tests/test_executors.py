"""Executors: worker processes per device, and the submitit (SLURM) path in debug mode; worker
processes that die, a killed parent, Ctrl-C, rejected commands (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec

from calibench import CalibenchError
from calibench.store.index import Store
from calibench.training.executors import run_local, run_processes, run_slurm, visible_gpus


def test_processes_executor_matches_in_process_training(tmp_path):
    specs = [tiny_spec("ce", epochs=1), tiny_spec("focal", epochs=1)]
    local = {o.spec.run_id: o.metrics for o in run_local(specs, Store(tmp_path / "local"))}
    store = Store(tmp_path / "workers")
    parallel = run_processes(specs, store, ["cpu", "cpu"], plugin_dirs=[])
    assert all(store.is_complete(s) for s in specs)
    assert [o.status for o in parallel] == ["complete", "complete"]
    for outcome in parallel:
        assert outcome.metrics["ece"] == local[outcome.spec.run_id]["ece"]
        assert outcome.metrics["acc"] == local[outcome.spec.run_id]["acc"]
    again = run_processes(specs, store, ["cpu"], plugin_dirs=[])
    assert [o.status for o in again] == ["skipped", "skipped"]


def test_slurm_executor_in_submitit_debug_mode(tmp_path):
    pytest.importorskip("submitit")
    spec = tiny_spec("ls", epochs=1)
    store = Store(tmp_path)
    results = run_slurm([spec], store, [], {"cluster": "debug", "timeout_min": 5})
    assert store.is_complete(spec) and results[0].spec.run_id == spec.run_id
    assert results[0].status == "complete"


def test_bad_slurm_settings_are_a_clear_error(tmp_path):
    pytest.importorskip("submitit")
    with pytest.raises(CalibenchError, match=r"bad \[slurm\] settings"):
        run_slurm([tiny_spec()], Store(tmp_path), [], {"cluster": "debug", "bogus_key": 1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_processes_executor_without_gpu_asks_for_devices():
    with pytest.raises(CalibenchError, match="--devices"):
        visible_gpus()


# Broken plugins, killed parents, Ctrl-C and rejected commands (docs/reliability.md) ---------


def test_broken_plugins_under_the_processes_executor(tmp_path, capsys):
    from store_helpers import EXPECTED_FAILURES, PLUGIN, PLUGIN_METHODS, rows

    from calibench.cli import main
    from calibench.registry import METHODS

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text(PLUGIN)
    out = tmp_path / "out"
    methods = "per_sample_loss,bare_tensor,kills_its_process,ce"
    argv = ["run", "--plugins", str(folder), "--epochs", "1", "--device", "cpu"]
    argv += ["--executor", "processes", "--devices", "cpu,cpu", "--methods", methods]
    try:
        assert main([*argv, "--output", str(out)]) == 1
    finally:
        for name in PLUGIN_METHODS:
            METHODS.unregister(name)
        sys.modules.pop("calibench_plugins.plugins.broken", None)
    found = rows(out / "calibench.db")
    assert found["ce"]["status"] == "complete"
    assert {m: found[m]["error"] for m in EXPECTED_FAILURES} == EXPECTED_FAILURES
    killed = found["kills_its_process"]
    assert killed["status"] == "failed" and "worker process died (exit code 9" in killed["error"]
    assert all(r["owner"] is None for r in found.values())
    assert "sweep: 1 complete, 3 failed" in " ".join(capsys.readouterr().out.split())


def _gated_args(plugins: Path, gate: Path, out: Path, epochs: int = 2) -> list[str]:
    """`calibench run` of the gated method, seeds 0 and 1, in two CPU worker processes."""
    args = ["run", "--plugins", str(plugins), "--methods", "gated", "--seeds", "0,1"]
    args += ["--epochs", str(epochs), "--device", "cpu", "--output", str(out)]
    args += ["--executor", "processes", "--devices", "cpu,cpu", "--set", f"gated.gate={gate}"]
    return args


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_kills_its_workers_and_a_rerun_takes_over(tmp_path, gated):
    from store_helpers import REPO, Recorder, all_rows, cli, gone, specs_of, wait_for

    from calibench.config import DEFAULT_CONFIG, Overrides, build_run_specs, load_config
    from calibench.data import load_dataset
    from calibench.plugins import load_plugin_dir
    from calibench.training.runner import run_one

    plugins, gate = gated
    out = tmp_path / "out"
    batch = specs_of(["ce"], 1)[0].training.batch_size
    steps = f"gated.steps={len(load_dataset('digits', '', False, 0).train) // batch}"
    args = [*_gated_args(plugins, gate, out), "--set", steps]
    log = open(tmp_path / "parent.log", "wb")  # noqa: SIM115
    parent = subprocess.Popen(cli(args), cwd=REPO, stdout=log, stderr=log)
    try:

        def both_in_their_second_epoch() -> bool:
            assert parent.poll() is None, (tmp_path / "parent.log").read_text()
            return [r["epoch"] for r in all_rows(out)] == [1, 1]

        wait_for(both_in_their_second_epoch, 240, "both workers to finish epoch 1")
        owners = [r["owner"] for r in all_rows(out)]
        workers = [int(o.rpartition(":")[2]) for o in owners]
        assert all(o.startswith(f"{socket.gethostname()}:") for o in owners)
        assert len(set(workers)) == 2 and parent.pid not in workers
        assert not any(map(gone, workers))
    finally:
        parent.kill()
        parent.wait()
        log.close()
    try:
        wait_for(lambda: all(map(gone, workers)), 10, "the workers to die with their parent")
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)

    load_plugin_dir(plugins)
    store = Store(out)
    sets = [steps, f"gated.gate={gate}"]
    overrides = Overrides(methods=["gated"], seeds=[0, 1], epochs=2, sets=sets, device="cpu")
    for spec in build_run_specs(load_config(DEFAULT_CONFIG), overrides):
        assert store.status(spec) == "interrupted"
        progress = Recorder(stop_at_start=True)
        with pytest.raises(KeyboardInterrupt):
            run_one(spec, store, progress)
        assert progress.started == [2]


def _workers_of(pid: int) -> list[int]:
    """The worker processes (multiprocessing spawns) whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _ctrl_c(args: list[str], ready, what: str) -> tuple[int, str]:
    """Start `calibench` with ``args`` in its own process group, press Ctrl-C (SIGINT to the
    whole group, as a terminal does) once ``ready(pid)``; returns its exit code and stderr."""
    from store_helpers import REPO, cli, wait_for

    command = subprocess.Popen(
        cli(args),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: ready(command.pid), 240, what)
        os.killpg(command.pid, signal.SIGINT)
        _, err = command.communicate(timeout=300)  # generous: workers stop slowly on a loaded CPU
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command.pid, signal.SIGKILL)
    return command.returncode, err.decode()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_the_workers_with_one_message_and_no_traceback(tmp_path, gated):
    from store_helpers import all_rows

    plugins, gate = gated
    out = tmp_path / "out"
    args = _gated_args(plugins, gate, out, epochs=1)
    expected = "calibench: interrupted. Finished epochs are saved"
    starting = _ctrl_c(args, lambda pid: len(_workers_of(pid)) == 2, "the workers to start")
    training = _ctrl_c(args, lambda pid: len(all_rows(out)) == 2, "both runs' claims")
    for code, err in (starting, training):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 130 and len(lines) == 1 and lines[0].startswith(expected), err
    assert [(r["status"], r["owner"]) for r in all_rows(out)] == [("interrupted", None)] * 2


def test_a_rejected_slurm_command_creates_nothing(tmp_path, capsys):
    pytest.importorskip("submitit")
    from store_helpers import one_error_line

    from calibench.cli import main
    from calibench.config import DEFAULT_CONFIG

    config = tmp_path / "benchmark.toml"
    table = "\n[slurm]"  # the table itself, not a comment that names it
    config.write_text(DEFAULT_CONFIG.read_text().replace(table, f"{table}\nbogus_key = 1", 1))
    out = tmp_path / "out"
    argv = ["run", "--config", str(config), "--executor", "slurm", "--methods", "ce"]
    assert main([*argv, "--epochs", "1", "--device", "cpu", "--output", str(out)]) == 2
    assert "bad [slurm] settings" in one_error_line(capsys.readouterr().err)
    assert not out.exists()
