"""Training, storage and resumption on the embedded digits (calibench/training/)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np
import pytest
import torch
from conftest import StopAfter, tiny_spec

from calibench.data import DeviceLoader, LoaderConfig, load_dataset
from calibench.data.loader import random_crop, random_hflip
from calibench.registry import DATASETS
from calibench.store.files import write_json
from calibench.store.index import Store
from calibench.training.runner import train_run


def test_same_seed_same_metrics(tmp_path):
    spec = tiny_spec("rankmixup_mndcg")
    a = train_run(spec, Store(tmp_path / "a"))
    b = train_run(spec, Store(tmp_path / "b"))
    for key in ("acc", "nll", "ece", "adaece", "ece_ts", "temperature"):
        assert a[key] == b[key]
    c = train_run(tiny_spec("rankmixup_mndcg", seed=1), Store(tmp_path / "c"))
    assert c["nll"] != a["nll"]


def test_run_folder_and_index(tmp_path):
    store = Store(tmp_path)
    spec = tiny_spec("mbls")
    metrics = train_run(spec, store)
    run_dir = store.run_dir(spec)
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "split.npz",
        "log.csv",
        "last.pt",
        "best.pt",
        "logits.npz",
        "metrics.json",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    log = (run_dir / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:5] == ["epoch", "lr", "loss", "ce", "margin"]
    assert len(log) == 1 + spec.training.epochs
    assert json.loads((run_dir / "metrics.json").read_text())["ece"] == metrics["ece"]
    with sqlite3.connect(store.db_path) as conn:
        rows = conn.execute("SELECT method, status, path FROM runs").fetchall()
    assert rows == [("mbls", "complete", str(run_dir.relative_to(tmp_path)))]
    split = np.load(run_dir / "split.npz")
    assert not set(split["train_indices"]) & set(split["val_indices"])
    assert store.is_complete(spec)


def test_metrics_come_from_the_best_validation_epoch(tmp_path):
    store = Store(tmp_path)
    spec = tiny_spec("ce", epochs=3)
    metrics = train_run(spec, store)
    log = (store.run_dir(spec) / "log.csv").read_text().splitlines()[1:]
    header = (store.run_dir(spec) / "log.csv").read_text().splitlines()[0].split(",")
    val_acc = [float(r.split(",")[header.index("val_acc")]) for r in log]
    assert metrics["best_epoch"] == 1 + int(np.argmax(val_acc))
    logits = np.load(store.run_dir(spec) / "logits.npz")
    assert metrics["best_val_acc"] == pytest.approx(
        float(np.mean(logits["val_logits"].argmax(1) == logits["val_labels"]))
    )


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    spec = tiny_spec("rankmixup_mrl", epochs=3)
    straight = train_run(spec, Store(tmp_path / "straight"))
    store = Store(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, store, StopAfter(2))
    assert not store.is_complete(spec)
    resumed = train_run(spec, store)
    for key in ("acc", "nll", "ece", "temperature", "best_epoch"):
        assert resumed[key] == straight[key]
    log = (store.run_dir(spec) / "log.csv").read_text().splitlines()
    assert len(log) == 4


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()} if False else {1j: 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_digits_split_is_fixed_and_disjoint():
    data = load_dataset("digits", "", False, 0)
    again = load_dataset.__wrapped__("digits", "", False, 0)
    other = load_dataset.__wrapped__("digits", "", False, 1)
    np.testing.assert_array_equal(data.val_indices, again.val_indices)
    assert not np.array_equal(data.val_indices, other.val_indices)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert not set(data.train_indices) & set(data.val_indices)


def test_loader_normalises_and_covers_the_split():
    spec = DATASETS.get("digits")
    data = load_dataset("digits", "", False, 0)
    loader = DeviceLoader(LoaderConfig(data.val, spec, 50, torch.device("cpu")))
    xs, ys = zip(*loader, strict=True)
    x = torch.cat(xs)
    assert x.shape == (216, 1, 8, 8) and torch.equal(torch.cat(ys), data.val.labels)
    expected = (data.val.images.float() / 255 - spec.mean[0]) / spec.std[0]
    torch.testing.assert_close(x, expected)


def test_train_loader_drops_last_and_shuffles_reproducibly():
    spec = DATASETS.get("digits")
    data = load_dataset("digits", "", False, 0)
    batches = [
        list(
            DeviceLoader(
                LoaderConfig(
                    data.train,
                    spec,
                    64,
                    torch.device("cpu"),
                    True,
                    torch.Generator().manual_seed(s),
                )
            )
        )
        for s in (0, 0, 1)
    ]
    assert len(batches[0]) == len(data.train) // 64
    assert all(x.shape[0] == 64 for x, _ in batches[0])
    assert torch.equal(batches[0][0][1], batches[1][0][1])
    assert not torch.equal(batches[0][0][1], batches[2][0][1])


def test_random_crop_shifts_with_zero_padding():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    out = random_crop(images, 1, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    centred = (out == images).all(dim=(1, 2, 3))
    assert 0 < int(centred.sum()) < 64
    for img in out:
        inner = img[img > 0]
        assert len(inner) >= 9
    flipped = random_hflip(images, torch.Generator().manual_seed(0))
    is_flipped = (flipped == images.flip(-1)).all(dim=(1, 2, 3))
    assert 0 < int(is_flipped.sum()) < 64


def test_bf16_precision_trains_and_has_its_own_run_id(tmp_path):
    spec = tiny_spec("rankmixup_mrl", epochs=1)
    bf16 = dataclasses.replace(spec, training=dataclasses.replace(spec.training, precision="bf16"))
    assert "precision" not in spec.identity()["training"]
    assert bf16.run_id != spec.run_id
    metrics = train_run(bf16, Store(tmp_path))
    assert 0.0 <= metrics["ece"] <= 1.0 and metrics["acc"] > 0.2
