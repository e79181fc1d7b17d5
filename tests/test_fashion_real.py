"""Train on the REAL Fashion-MNIST (Debian's dataset-fashion-mnist, which .ci/run installs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec

from calibench.data import DeviceLoader, LoaderConfig, Split
from calibench.evaluation.metrics import accuracy
from calibench.evaluation.predict import predict_logits
from calibench.training.loop import prepare, train_one_epoch

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_small_net_learns_real_fashion_mnist(tmp_path, monkeypatch):
    if not DEBIAN_FASHION.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must install dataset-fashion-mnist (see .ci/run)")
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    monkeypatch.setenv("CALIBENCH_DATA", str(tmp_path))
    spec = tiny_spec("ce", epochs=1)
    spec = type(spec)(**{**spec.__dict__, "backbone": "small_resnet"})
    spec = type(spec)(**{**spec.__dict__, "dataset": "fashion_mnist"})
    p = prepare(spec)
    assert len(p.data.train) == 55_000 and len(p.data.test) == 10_000
    subset = Split(p.data.train.images[:10000], p.data.train.labels[:10000])
    loader = DeviceLoader(LoaderConfig(subset, p.dataset, 64, p.device, True, p.generator))
    terms = train_one_epoch(p.net, p.model, p.method, p.optimizer, loader, spec.training)
    assert terms["loss"] < 2.0
    test = DeviceLoader(LoaderConfig(p.data.test, p.dataset, 1000, p.device))
    acc = accuracy(predict_logits(p.model, test), p.data.test.labels.numpy())
    assert acc > 0.6, f"accuracy {acc:.3f} after one short epoch; chance is 0.1"
    assert torch.isfinite(torch.tensor(terms["loss"]))
