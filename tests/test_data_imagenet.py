"""A streamed (ImageNet-layout) dataset end to end through the command line: train, evaluate
under ImageNet-C, and build the HTML report, whose mixing diagnostic reads the streamed test
images through the loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_datasets import write_fake_imagenet, write_fake_imagenet_c

from calibench.cli import main
from calibench.data import LoaderConfig, load_dataset, make_loader
from calibench.data.imagenet import imagenet_dataset
from calibench.evaluation.mixing import mixing_diagnostic
from calibench.evaluation.predict import predict_logits
from calibench.evaluation.shift import load_selected_model, read_shift_logits
from calibench.registry import DATASETS
from calibench.shift import shift_dataset, shifted_test_sets
from calibench.spec import RunSpec


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One epoch of a small CNN on a 3-class ImageNet (registered as ``imagenet``, 16 px
    crops), with ImageNet-C's fog and contrast folders beside it."""
    tmp = tmp_path_factory.mktemp("imagenet")
    patch = pytest.MonkeyPatch()
    patch.setitem(DATASETS._entries, "imagenet", imagenet_dataset("imagenet", 3, 16, 20))
    patch.setenv("CALIBENCH_WORKERS", "0")
    load_dataset.cache_clear()
    write_fake_imagenet(tmp / "data")
    write_fake_imagenet_c(tmp / "data", ["fog", "contrast"])
    argv = ["run", "--datasets", "imagenet", "--backbones", "small_cnn", "--methods", "ce"]
    argv += ["--epochs", "1", "--set", "training.batch_size=4", "--set"]
    argv += ["training.eval_batch_size=5", "--data-root", str(tmp / "data")]
    assert main([*argv, "--output", str(tmp / "out"), "--device", "cpu"]) == 0
    yield tmp / "out"
    patch.undo()
    load_dataset.cache_clear()


def run_folder(out: Path) -> Path:
    (found,) = out.glob("runs/imagenet/*/ce/*/metrics.json")
    return found.parent


def test_imagenet_c_of_a_streamed_run(store):
    assert main(["evaluate", "--shift", "imagenet-c", "--corruptions", "fog,contrast",
                 "--device", "cpu", "--output", str(store)]) == 0  # fmt: skip
    folder = run_folder(store)
    stored = read_shift_logits(folder / "shift-imagenet-c.npz")
    assert sorted(stored) == [(c, s) for c in ("contrast", "fog") for s in range(1, 6)]
    spec = RunSpec.from_dict(json.loads((folder / "config.json").read_text()))
    model = load_selected_model(spec, folder, torch.device("cpu"))
    clean = load_dataset("imagenet", spec.data_root, False, 0).test
    sets = shifted_test_sets("imagenet-c", "imagenet", clean, Path(spec.data_root), 0, ["fog"])
    (split,) = [s for _, severity, s in sets if severity == 3]
    dataset = shift_dataset("imagenet-c", DATASETS.get("imagenet"))
    loader = make_loader(LoaderConfig(split, dataset, 5, torch.device("cpu")))
    expected = predict_logits(model, loader)
    logits, labels = stored[("fog", 3)]
    np.testing.assert_array_equal(logits, expected)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_report_of_a_streamed_store_runs_the_mixing_diagnostic(store):
    result = mixing_diagnostic(run_folder(store), max_samples=6)
    assert result.n_pairs > 0 and 0 <= result.agreement <= 1
    assert main(["report", "--output", str(store), "--format", "md,csv,html"]) == 0
    page = (store / "report" / "index.html").read_text()
    assert "mixing diagnostic of ce skipped" not in page
    mixing = pd.read_csv(store / "report" / "mixing.csv")
    assert set(mixing["method"]) == {"ce"}
