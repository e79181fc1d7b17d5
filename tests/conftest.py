"""Shared fixtures: plugins loaded once, small run specs on the embedded digits, and the one
trained store of the session (``trained``) with its writable copies (``store_copy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibench.plugins import discover_plugins
from calibench.spec import RunSpec, Training


@pytest.fixture(scope="session", autouse=True)
def plugins():
    discover_plugins()


@pytest.fixture
def bypass_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision accept fake CIFAR/SVHN files, whose MD5s cannot match the real ones."""
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn
    import torchvision.datasets.utils

    datasets = torchvision.datasets
    for module in (datasets.cifar, datasets.svhn, datasets.utils):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


def tiny_spec(method: str = "ce", epochs: int = 2, seed: int = 0, **hparams) -> RunSpec:
    """A digits run small enough for a test: a couple of epochs on the CPU."""
    return RunSpec(
        method=method,
        dataset="digits",
        backbone="small_cnn",
        seed=seed,
        training=Training(epochs=epochs, batch_size=64, lr=0.05),
        hparams=hparams,
        device="cpu",
    )


def random_logits(n=2000, k=10, scale=3.0, seed=0):
    """Logits of n samples over k classes whose true class is favoured by 1.5 (before scaling),
    and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    return logits * scale, labels


class StopAfter:
    """A progress display that interrupts the run after a given epoch, as Ctrl-C would."""

    def __init__(self, epoch: int) -> None:
        self.stop_epoch = epoch

    def epoch(self, row):
        if row["epoch"] == self.stop_epoch:
            raise KeyboardInterrupt

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def files_of(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """ce and ls trained for one epoch on digits by `calibench run` (the runs store_helpers'
    ``specs_of(["ce", "ls"], 1)`` names), once per session. Tests only read it: one that writes
    copies it first (``store_copy``), and a write into it fails the session at the end."""
    from calibench.cli import main

    out = tmp_path_factory.mktemp("trained")
    argv = ["run", "--methods", "ce,ls", "--epochs", "1", "--device", "cpu", "--output", str(out)]
    assert main(argv) == 0
    before = files_of(out)
    yield out
    after = files_of(out)
    changed = sorted(str(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"tests wrote into the shared store (copy it first): {changed}"


@pytest.fixture
def store_copy(trained, tmp_path):
    """A copy of the ``trained`` results folder that a test may damage."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def gated(tmp_path):
    """A plugin folder with the method ``gated`` (tests/store_helpers.py), and its gate file."""
    import sys

    from store_helpers import GATED

    from calibench.registry import METHODS

    folder = tmp_path / "gated_plugin"
    folder.mkdir()
    (folder / "gated.py").write_text(GATED)
    yield folder, tmp_path / "gate"
    METHODS.unregister("gated")
    sys.modules.pop("calibench_plugins.gated_plugin.gated", None)
