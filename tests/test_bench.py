"""calibench bench (calibench/bench/steps.py): counts each method's model passes and splits the
step time, stateful methods included."""

from __future__ import annotations

import torch

from calibench.bench.steps import bench_methods
from calibench.cli import main


def test_bench_counts_passes_and_splits_time():
    rows = bench_methods(
        ["ce", "rankmixup_mrl", "rankmixup_mndcg", "regmixup"],
        "digits",
        "small_cnn",
        batch_size=16,
        steps=2,
        device=torch.device("cpu"),
    )
    shape = {r.method: (r.forward_passes, r.samples_per_input) for r in rows}
    assert shape == {
        "ce": (1, 1.0),
        "rankmixup_mrl": (2, 2.0),
        "rankmixup_mndcg": (2, 4.0),
        "regmixup": (1, 2.0),
    }
    for r in rows:
        assert r.step_ms > 0 and r.loss_ms > 0
        assert abs(r.model_ms + r.loss_ms - r.step_ms) < 1e-9


def test_bench_command_prints_a_table(capsys):
    assert main(["bench", "--methods", "ce,focal", "--steps", "1", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "focal" in out and "ms per training step" in out


def test_bench_times_the_stateful_methods() -> None:
    rows = bench_methods(["crl", "camixup"], "digits", "small_cnn", 8, 1, torch.device("cpu"), 0)
    assert [(r.method, r.forward_passes) for r in rows] == [("crl", 1), ("camixup", 1)]
