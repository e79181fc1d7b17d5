"""Executors: worker processes per device, and the submitit (SLURM) path in debug mode."""

from __future__ import annotations

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
