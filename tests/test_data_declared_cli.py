"""A dataset declared in ./benchmark.toml, end to end through the command line: it trains and
learns, its run stores the normalisation every later evaluation uses, and a bad folder stops
the command with one message (exit 2) before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import write_colour_folders

from calibench.cli import main
from calibench.data import load_dataset, spec_for
from calibench.registry import DATASETS

DATASET = """
[datasets.colours]
format = "imagefolder"
root = "colours"
"""
PRESET = """
[presets.mine]
methods = ["ce"]
datasets = ["colours"]
"""
MINE = 'default_preset = "mine"\n'


@pytest.fixture
def colours(tmp_path, monkeypatch):
    """A working directory holding 3 separable colour classes under ./colours."""
    write_colour_folders(tmp_path / "colours", train_per_class=150, test_per_class=20)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    DATASETS.unregister("colours")
    load_dataset.cache_clear()


def run_dir(out: Path) -> Path:
    (found,) = out.glob("runs/colours/*/*/*/metrics.json")
    return found.parent


def train_and_check(tmp_path: Path) -> None:
    argv = ["run", "--datasets", "colours", "--methods", "ce", "--epochs", "3", "--device", "cpu"]
    assert main(argv) == 0
    folder = run_dir(tmp_path / "results")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["acc"] > 0.6 and metrics["n_test"] == 60
    stored = np.load(folder / "split.npz")
    data = load_dataset("colours", "", False, 0)
    assert tuple(stored["mean"]) == spec_for("colours", data).mean
    assert tuple(stored["std"]) == data.normalisation.std


def test_declared_imagefolder_trains_and_learns(colours, capsys):
    (colours / "benchmark.toml").write_text(MINE + DATASET + PRESET)
    train_and_check(colours)
    report = ["report", "--format", "csv,html", "--mixing-samples", "30"]
    assert main(report) == 0
    assert (
        "mixing diagnostic of ce skipped" not in (colours / "results/report/index.html").read_text()
    )
    shutil.rmtree(colours / "colours")
    capsys.readouterr()
    assert main(report) == 0
    assert "warning: [datasets.colours]: root" in capsys.readouterr().out


def test_a_benchmark_toml_declaring_only_the_dataset_trains_and_learns(colours):
    """The settings file declares nothing but the dataset: presets and protocols come from the
    packaged defaults it layers on."""
    (colours / "benchmark.toml").write_text(DATASET)
    train_and_check(colours)


def test_a_bad_folder_exits_2_before_anything_is_written(colours, capsys):
    bad = DATASET.replace('"colours"', '"nowhere"')
    (colours / "benchmark.toml").write_text(MINE + bad + PRESET)
    assert main(["run", "--epochs", "1", "--output", str(colours / "out")]) == 2
    err = capsys.readouterr().err
    assert "[datasets.colours]: root" in err and "nowhere is not a folder" in err
    assert "Traceback" not in err and not (colours / "out").exists()


def test_worker_processes_know_the_declared_dataset(colours):
    (colours / "benchmark.toml").write_text(MINE + DATASET + PRESET)
    argv = ["run", "--epochs", "1", "--executor", "processes", "--devices", "cpu"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert json.loads((run_dir(colours / "results") / "metrics.json").read_text())["n_test"] == 60
