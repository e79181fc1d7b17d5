"""Datasets declared in the settings (format = "imagefolder" / "npz"): what registration infers,
what loading gives back, the statistics stored with a run, and one clear error per bad input;
and a dataset declared in ./benchmark.toml end to end through the command line: it trains and
learns, its run stores the normalisation every later evaluation uses, and a bad folder stops
the command with one message (exit 2) before anything is written."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import COLOURS, write_colour_folders

from calibench.cli import main
from calibench.data import (
    DataRequest,
    FileSplit,
    LoaderConfig,
    Split,
    load_dataset,
    make_loader,
    register_from_settings,
    spec_for,
)
from calibench.data import declared as declared_module
from calibench.data.own import channel_statistics
from calibench.errors import CalibenchError
from calibench.registry import DATASETS

NAMES = (f"own{i}" for i in itertools.count())


@pytest.fixture
def name():
    """A fresh dataset name per test, unregistered afterwards."""
    chosen = next(NAMES)
    yield chosen
    DATASETS.unregister(chosen)
    load_dataset.cache_clear()


def declare(name: str, tmp_path: Path, **table):
    """Register ``[datasets.<name>]`` as a benchmark.toml in ``tmp_path`` would declare it."""
    return register_from_settings(name, table, tmp_path / "benchmark.toml")


def load(name: str, seed: int = 0):
    return DATASETS.get(name).load(DataRequest(Path("unused"), split_seed=seed))


# ------------------------------------------------------------------------------ imagefolder


def test_imagefolder_registration_infers_classes_channels_and_size(tmp_path, name):
    write_colour_folders(tmp_path / "colours", size=10)
    spec = declare(name, tmp_path, format="imagefolder", root="colours")
    assert DATASETS.get(name) is spec
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (3, 3, 10)
    assert (spec.crop_padding, spec.hflip, spec.stream) == (1, True, None)
    assert all(np.isnan(spec.mean)) and all(np.isnan(spec.std))
    gray = declare(name, tmp_path, format="imagefolder", root="colours", channels=1, hflip=False)
    assert (gray.in_channels, gray.hflip) == (1, False)


def test_imagefolder_round_trip_split_and_statistics(tmp_path, name):
    fake = write_colour_folders(tmp_path / "c", train_per_class=10, test_per_class=2)
    declare(name, tmp_path, format="imagefolder", root="c")
    data = load(name, seed=3)
    assert data.class_names == sorted(COLOURS)
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 6)
    assert sorted(data.val.labels.tolist()) == [0, 1, 2]
    assert np.array_equal(data.train.images.numpy(), fake["train"].train_images[data.train_indices])
    assert np.array_equal(data.val.labels.numpy(), fake["train"].train_labels[data.val_indices])
    assert np.array_equal(data.test.images.numpy(), fake["test"].train_images)
    assert not set(data.train_indices) & set(data.val_indices)
    again, other = load(name, seed=3), load(name, seed=4)
    assert np.array_equal(again.val_indices, data.val_indices)
    assert not np.array_equal(other.val_indices, data.val_indices)
    pixels = fake["train"].train_images[data.train_indices].astype(np.float64) / 255
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    np.testing.assert_allclose(data.normalisation.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.normalisation.std, std, rtol=1e-12)
    record = data.split_record()
    assert set(record) == {"train_indices", "val_indices", "mean", "std"}
    np.testing.assert_allclose(record["std"], std, rtol=1e-12)
    assert spec_for(name, data).mean == data.normalisation.mean


def test_imagefolder_val_folder_and_image_size(tmp_path, name):
    write_colour_folders(tmp_path / "c", train_per_class=4, val_per_class=2, size=12)
    spec = declare(name, tmp_path, format="imagefolder", root=str(tmp_path / "c"), image_size=6)
    data = load(name)
    assert spec.image_size == 6 and tuple(data.train.images.shape) == (12, 3, 6, 6)
    assert (len(data.train), len(data.val)) == (12, 6)
    assert data.val_indices.tolist() == list(range(6))
    assert data.val.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_normalised_batches_use_the_training_statistics(tmp_path, name):
    write_colour_folders(tmp_path / "c", train_per_class=5, test_per_class=2)
    declare(name, tmp_path, format="imagefolder", root="c")
    data = load_dataset(name, "", False, 0)
    spec = spec_for(name, data)
    loader = make_loader(LoaderConfig(data.test, spec, 4, torch.device("cpu")))
    x = torch.cat([batch for batch, _ in loader])
    mean = torch.tensor(data.normalisation.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.normalisation.std).view(1, 3, 1, 1)
    expected = (data.test.images.double() / 255 - mean) / std
    torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-5)
    assert float(channel_statistics(data.train.images).mean[0]) == data.normalisation.mean[0]


def test_large_imagefolder_streams_from_its_files(tmp_path, name, monkeypatch):
    write_colour_folders(tmp_path / "c", train_per_class=5, test_per_class=2, size=12)
    monkeypatch.setattr(declared_module, "MEMORY_LIMIT", 100)
    spec = declare(name, tmp_path, format="imagefolder", root="c")
    assert spec.stream is not None and spec.stream.crop_size == 12
    data = load(name)
    assert isinstance(data.train, FileSplit) and len(data.test) == 6
    assert data.normalisation is not None and len(data.normalisation.mean) == 3
    loader = make_loader(LoaderConfig(data.test, spec_for(name, data), 4, torch.device("cpu")))
    assert [tuple(x.shape) for x, _ in loader] == [(4, 3, 12, 12), (2, 3, 12, 12)]
    kept = declare(name, tmp_path, format="imagefolder", root="c", stream=False)
    assert kept.stream is None and isinstance(load(name).train, Split)


def remove(path: Path) -> None:
    for item in sorted(path.rglob("*"), reverse=True):
        item.unlink() if item.is_file() else item.rmdir()
    path.rmdir()


def _no_class_folders(root: Path) -> None:
    remove(root / "train")
    (root / "train").mkdir()


def _loose_image(root: Path) -> None:
    (root / "train" / "red" / "000.png").rename(root / "train" / "loose.png")


def _one_class(root: Path) -> None:
    remove(root / "train" / "blue")
    remove(root / "train" / "green")


def _extra_test_class(root: Path) -> None:
    (root / "test" / "purple").mkdir()
    (root / "test" / "red" / "000.png").rename(root / "test" / "purple" / "000.png")


def _missing_test_class(root: Path) -> None:
    remove(root / "test" / "green")


def _empty_class(root: Path) -> None:
    for path in (root / "test" / "blue").iterdir():
        path.unlink()


def _unreadable_first_image(root: Path) -> None:
    (root / "train" / "blue" / "000.png").write_bytes(b"not a png")


BAD_FOLDERS = {
    "no class folders": (_no_class_folders, "has no class folders"),
    "loose images": (_loose_image, "holds images directly"),
    "one class": (_one_class, "holds one class"),
    "extra test class": (_extra_test_class, "classes differ between splits: .*purple"),
    "missing test class": (_missing_test_class, "classes differ between splits: .*lacks .*green"),
    "empty class folder": (_empty_class, "blue holds no image"),
    "no test folder": (lambda root: remove(root / "test"), "test is missing"),
    "unreadable image": (_unreadable_first_image, "cannot read image .*000.png"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_every_bad_folder_is_one_clear_error(tmp_path, name, case):
    write_colour_folders(tmp_path / "c", train_per_class=3, test_per_class=1)
    damage, message = BAD_FOLDERS[case]
    damage(tmp_path / "c")
    with pytest.raises(CalibenchError, match=rf"\[datasets.{name}\]: .*{message}"):
        declare(name, tmp_path, format="imagefolder", root="c")
    assert name not in DATASETS


def test_an_unreadable_image_past_the_first_fails_the_load(tmp_path, name):
    write_colour_folders(tmp_path / "c", train_per_class=3, test_per_class=1)
    bad = tmp_path / "c" / "test" / "red" / "000.png"
    bad.write_bytes(b"\x89PNG truncated")
    declare(name, tmp_path, format="imagefolder", root="c")
    with pytest.raises(CalibenchError, match=f"cannot read image {bad}"):
        load(name)


def test_a_class_too_small_to_hold_out_is_a_clear_error(tmp_path, name):
    write_colour_folders(tmp_path / "c", train_per_class=3, test_per_class=1)
    for path in list((tmp_path / "c" / "train" / "red").iterdir())[1:]:
        path.unlink()
    declare(name, tmp_path, format="imagefolder", root="c")
    with pytest.raises(CalibenchError, match="class 2 has 1 training image"):
        load(name)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"format": "folders", "root": "c"}, "format must be one of 'imagefolder', 'npz'"),
        ({"format": "imagefolder"}, "has no root"),
        ({"format": "imagefolder", "root": "nowhere"}, "nowhere is not a folder"),
        ({"format": "imagefolder", "path": "c"}, "has a root, not a path"),
        ({"format": "imagefolder", "root": "c", "image_size": 0}, "image_size is 0"),
        ({"format": "imagefolder", "root": "c", "crop_padding": -1}, "crop_padding is -1"),
        ({"format": "imagefolder", "root": "c", "channels": 2}, "channels must be one of 1, 3"),
        ({"format": "imagefolder", "root": "c", "stream": True, "channels": 1}, "decoded as RGB"),
    ],
)
def test_bad_data_settings_are_one_clear_error(tmp_path, name, table, message):
    write_colour_folders(tmp_path / "c", train_per_class=2, test_per_class=1)
    with pytest.raises(CalibenchError, match=message):
        declare(name, tmp_path, **table)


def test_a_builtin_dataset_cannot_be_redeclared(tmp_path):
    write_colour_folders(tmp_path / "c", train_per_class=2, test_per_class=1)
    with pytest.raises(CalibenchError, match="'cifar10' is a built-in dataset"):
        declare("cifar10", tmp_path, format="imagefolder", root="c")
    assert "cifar10" in DATASETS.source("cifar10")


def test_a_table_without_format_declares_nothing(tmp_path):
    assert declare("digits", tmp_path, backbone="small_cnn", epochs=3) is None


# ------------------------------------------------------------------------------------ npz


def arrays(rng: np.random.Generator, n: int, layout: str = "nhwc", k: int = 3) -> dict:
    shape = {"nhwc": (n, 8, 8, 3), "nchw": (n, 3, 8, 8), "nhw": (n, 8, 8)}[layout]
    return {
        "x": rng.integers(0, 256, shape, dtype=np.uint8),
        "y": np.arange(n) % k,
    }


def write_npz(path: Path, layout: str = "nhwc", val: bool = False, **replace) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 12), ("test", 6), *((("val", 3),) if val else ())):
        drawn = arrays(rng, n, layout)
        out[f"x_{split}"], out[f"y_{split}"] = drawn["x"], drawn["y"]
    out.update(replace)
    np.savez(path, **{k: v for k, v in out.items() if v is not None})
    return out


@pytest.mark.parametrize(("layout", "channels"), [("nhwc", 3), ("nchw", 3), ("nhw", 1)])
def test_npz_round_trip(tmp_path, name, layout, channels):
    written = write_npz(tmp_path / "a.npz", layout)
    spec = declare(name, tmp_path, format="npz", path="a.npz", crop_padding=0)
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (3, channels, 8)
    data = load(name)
    expected = written["x_test"]
    if layout == "nhwc":
        expected = expected.transpose(0, 3, 1, 2)
    elif layout == "nhw":
        expected = expected[:, None]
    assert np.array_equal(data.test.images.numpy(), expected)
    assert (len(data.train), len(data.val)) == (9, 3) and data.class_names == ["0", "1", "2"]
    assert data.normalisation is not None


def test_npz_validation_arrays_are_used(tmp_path, name):
    written = write_npz(tmp_path / "a.npz", val=True)
    declare(name, tmp_path, format="npz", path="a.npz")
    data = load(name)
    assert (len(data.train), len(data.val)) == (12, 3)
    assert np.array_equal(data.val.labels.numpy(), written["y_val"])


BAD_ARRAYS = {
    "missing array": ({"y_test": None}, "lacks y_test"),
    "float images": ({"x_train": np.zeros((12, 8, 8, 3))}, "x_train is float64, not uint8"),
    "bad shape": (
        {"x_train": np.zeros((12, 8, 8, 5), np.uint8)},
        r"x_train has shape \(12, 8, 8, 5\)",
    ),
    "label count": ({"y_train": np.arange(11) % 3}, "y_train is int64 \\(11,\\)"),
    "float labels": ({"y_train": np.zeros(12)}, "y_train is float64"),
    "one class": ({"y_train": np.zeros(12, np.int64)}, "holds 1 class"),
    "class without images": ({"y_train": np.arange(12) % 2 * 2}, r"classes \[1\] have no training"),
    "unknown test class": ({"y_test": np.arange(6) % 4}, "classes differ between splits: y_test"),
    "splits differ": ({"x_test": np.zeros((6, 9, 9, 3), np.uint8)}, "the splits' images differ"),
    "val without labels": ({"x_val": np.zeros((3, 8, 8, 3), np.uint8)}, "lacks y_val"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_every_bad_npz_is_one_clear_error(tmp_path, name, case):
    replace, message = BAD_ARRAYS[case]
    write_npz(tmp_path / "a.npz", **replace)
    with pytest.raises(CalibenchError, match=rf"\[datasets.{name}\]: .*{message}"):
        declare(name, tmp_path, format="npz", path="a.npz")


def test_npz_file_problems(tmp_path, name):
    with pytest.raises(CalibenchError, match="a.npz is not a file"):
        declare(name, tmp_path, format="npz", path="a.npz")
    (tmp_path / "a.npz").write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(CalibenchError, match="cannot read .*a.npz"):
        declare(name, tmp_path, format="npz", path="a.npz")
    write_npz(tmp_path / "b.npz")
    with pytest.raises(CalibenchError, match="always held in memory"):
        declare(name, tmp_path, format="npz", path="b.npz", stream=True)
    with pytest.raises(CalibenchError, match="has a path, not a root"):
        declare(name, tmp_path, format="npz", root="b.npz")


# Through the command line

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
