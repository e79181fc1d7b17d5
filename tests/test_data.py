"""The data room (calibench/data/): the file-backed datasets (exact on-disk formats in, uint8
splits out, clear errors), the loaders, and a short training on the REAL Fashion-MNIST (Debian's
dataset-fashion-mnist, which .ci/run installs)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from fake_datasets import (
    IDX_NAMES,
    write_fake_cifar10,
    write_fake_cifar100,
    write_fake_mnist_raw,
    write_fake_svhn,
    write_fake_tiny_imagenet,
    write_idx,
)

import calibench.data  # noqa: F401
from calibench.data import DataRequest, DeviceLoader, ImageData, LoaderConfig, Split, load_dataset
from calibench.data import mnist as mnist_module
from calibench.data.files import holdout_per_class, holdout_size
from calibench.errors import CalibenchError
from calibench.evaluation.metrics import accuracy
from calibench.evaluation.predict import predict_logits
from calibench.registry import DATASETS
from calibench.training.loop import prepare, train_one_epoch

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the Fashion-MNIST Debian fallback at an empty folder."""
    empty = tmp_path / "no-debian-package"
    empty.mkdir()
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_FALLBACK_DIR", empty)
    return empty


def load(name: str, root: Path, seed: int = 0, download: bool = False) -> ImageData:
    return DATASETS.get(name).load(DataRequest(root=root, split_seed=seed, download=download))


def assert_matches(data: ImageData, fake, shape: tuple[int, int, int]) -> None:
    """Types, shapes, round-tripped pixels and labels, and a disjoint covering split."""
    n_train = len(fake.train_labels)
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == shape
    assert len(data.val) == holdout_size(n_train)
    assert len(data.train) + len(data.val) == n_train
    assert np.intersect1d(data.train_indices, data.val_indices).size == 0
    assert np.array_equal(np.union1d(data.train_indices, data.val_indices), np.arange(n_train))
    for split, idx in ((data.train, data.train_indices), (data.val, data.val_indices)):
        assert np.array_equal(split.images.numpy(), fake.train_images[idx])
        assert np.array_equal(split.labels.numpy(), fake.train_labels[idx])
    assert np.array_equal(data.test.images.numpy(), fake.test_images)
    assert np.array_equal(data.test.labels.numpy(), fake.test_labels)
    assert data.class_names == fake.class_names


def test_split_size_rules() -> None:
    assert holdout_size(50_000) == 5000
    assert holdout_size(60_000) == 5000
    assert holdout_size(73_257) == 5000
    assert holdout_size(20) == 2
    assert holdout_size(5) == 1
    assert holdout_per_class(500) == 50
    assert holdout_per_class(50) == 5
    assert holdout_per_class(8) == 1


def test_specs() -> None:
    expected = {
        "cifar10": (10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True),
        "cifar100": (100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True),
        "svhn": (10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False),
        "tiny_imagenet": (200, 3, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4, True),
        "mnist": (10, 1, 28, (0.1307,), (0.3081,), 0, False),
        "fashion_mnist": (10, 1, 28, (0.2860,), (0.3530,), 2, True),
    }
    for name, values in expected.items():
        s = DATASETS.get(name)
        assert (
            s.num_classes,
            s.in_channels,
            s.image_size,
            s.mean,
            s.std,
            s.crop_padding,
            s.hflip,
        ) == values, name


# CIFAR


def test_cifar10_round_trip(tmp_path: Path, bypass_md5: None) -> None:
    fake = write_fake_cifar10(tmp_path, n_train_per_batch=4, n_test=6)
    data = load("cifar10", tmp_path)
    assert_matches(data, fake, (3, 32, 32))
    assert len(data.train) == 18 and len(data.val) == 2 and len(data.test) == 6


def test_cifar10_pixel_layout(tmp_path: Path, bypass_md5: None) -> None:
    """A row of a batch is the red, then green, then blue 32x32 plane, row-major."""
    write_fake_cifar10(tmp_path, n_train_per_batch=4, n_test=2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch["data"][:] = 0
    batch["data"][0, 0 * 1024 + 2 * 32 + 5] = 255
    batch["data"][0, 1 * 1024 + 31 * 32 + 0] = 17
    batch["data"][1, 2 * 1024 + 0 * 32 + 31] = 99
    path.write_bytes(pickle.dumps(batch, protocol=2))
    images = load("cifar10", tmp_path).test.images
    assert images[0, 0, 2, 5] == 255 and images[0, 1, 31, 0] == 17 and images[1, 2, 0, 31] == 99
    assert int(images.sum()) == 255 + 17 + 99


def test_cifar_split_is_seeded(tmp_path: Path, bypass_md5: None) -> None:
    write_fake_cifar10(tmp_path, n_train_per_batch=20, n_test=2)
    a, b, c = (load("cifar10", tmp_path, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.val_indices, b.val_indices)
    assert torch.equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val_indices, c.val_indices)


def test_cifar100_round_trip(tmp_path: Path, bypass_md5: None) -> None:
    fake = write_fake_cifar100(tmp_path, n_train=30, n_test=10)
    data = load("cifar100", tmp_path)
    assert_matches(data, fake, (3, 32, 32))
    assert len(data.class_names) == 100 and data.class_names[7] == "fine7"


def test_cifar_missing_names_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError) as err:
        load("cifar10", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message and "batches.meta" in message
    assert "--download" in message


def test_cifar_partly_missing_lists_only_absent_files(tmp_path: Path, bypass_md5: None) -> None:
    write_fake_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(CalibenchError, match=r"not found: test missing in"):
        load("cifar100", tmp_path)


def test_cifar_truncated_batch(tmp_path: Path, bypass_md5: None) -> None:
    write_fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CalibenchError, match="data_batch_3.*corrupt"):
        load("cifar10", tmp_path)


def test_cifar_md5_mismatch_names_the_file(tmp_path: Path) -> None:
    """Without the bypass, torchvision's checksum rejects fake files: reported per file."""
    write_fake_cifar10(tmp_path)
    with pytest.raises(CalibenchError, match="data_batch_1.*MD5"):
        load("cifar10", tmp_path)


# SVHN


def test_svhn_round_trip_and_label_ten_is_zero(tmp_path: Path, bypass_md5: None) -> None:
    fake = write_fake_svhn(tmp_path, n_train=20, n_test=8)
    data = load("svhn", tmp_path)
    assert_matches(data, fake, (3, 32, 32))
    assert 0 in set(fake.train_labels.tolist()) | set(fake.test_labels.tolist())
    assert int(data.test.labels.max()) <= 9


def test_svhn_pixel_layout_and_labels(tmp_path: Path, bypass_md5: None) -> None:
    """``X[h, w, c, n]`` becomes image n, channel c, row h, column w; label 10 becomes 0."""
    import scipy.io

    write_fake_svhn(tmp_path, n_train=20, n_test=2)
    x = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    x[2, 5, 0, 0] = 200
    x[30, 1, 2, 1] = 33
    y = np.array([[10], [3]], dtype=np.uint8)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": x, "y": y})
    test = load("svhn", tmp_path).test
    assert test.images[0, 0, 2, 5] == 200 and test.images[1, 2, 30, 1] == 33
    assert int(test.images.sum()) == 233
    assert test.labels.tolist() == [0, 3]


def test_svhn_missing(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError) as err:
        load("svhn", tmp_path)
    message = str(err.value)
    assert "train_32x32.mat" in message and "test_32x32.mat" in message
    assert str(tmp_path) in message and "--download" in message


def test_svhn_truncated(tmp_path: Path, bypass_md5: None) -> None:
    write_fake_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CalibenchError, match="train_32x32.mat.*corrupt"):
        load("svhn", tmp_path)


# MNIST and Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    fake = write_fake_mnist_raw(tmp_path, n_train=30, n_test=10, dataset="MNIST", gz=gz)
    data = load("mnist", tmp_path)
    assert_matches(data, fake, (1, 28, 28))


def test_fashion_mnist_round_trip(tmp_path: Path, no_fallback: Path) -> None:
    fake = write_fake_mnist_raw(tmp_path, n_train=40, n_test=10, dataset="FashionMNIST")
    data = load("fashion_mnist", tmp_path)
    assert_matches(data, fake, (1, 28, 28))
    assert len(data.val) == 4


def test_fashion_mnist_debian_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "usr-share-datasets-fashion-mnist"
    fake = write_fake_mnist_raw(tmp_path, 50, 10, dataset="FashionMNIST", gz=True, folder=package)
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_FALLBACK_DIR", package)
    root = tmp_path / "data"
    data = load("fashion_mnist", root)
    assert_matches(data, fake, (1, 28, 28))
    assert not root.exists()


def test_local_files_win_over_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "package"
    write_fake_mnist_raw(tmp_path, 50, 10, dataset="FashionMNIST", gz=True, folder=package, seed=1)
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_FALLBACK_DIR", package)
    local = write_fake_mnist_raw(tmp_path / "data", 20, 5, dataset="FashionMNIST", seed=2)
    assert_matches(load("fashion_mnist", tmp_path / "data"), local, (1, 28, 28))


def test_fashion_mnist_missing_mentions_debian_package(tmp_path: Path, no_fallback: Path) -> None:
    with pytest.raises(CalibenchError) as err:
        load("fashion_mnist", tmp_path / "data")
    message = str(err.value)
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message


def test_mnist_partly_missing(tmp_path: Path) -> None:
    write_fake_mnist_raw(tmp_path, dataset="MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CalibenchError) as err:
        load("mnist", tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(err.value)
    assert "train-images-idx3-ubyte" not in str(err.value).split("missing in")[0]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated(tmp_path: Path, gz: bool) -> None:
    write_fake_mnist_raw(tmp_path, dataset="MNIST", gz=gz)
    path = tmp_path / "MNIST" / "raw" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CalibenchError, match="train-images-idx3-ubyte.*corrupt"):
        load("mnist", tmp_path)


def test_fashion_fallback_bad_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "package"
    write_fake_mnist_raw(tmp_path, dataset="FashionMNIST", gz=True, folder=package)
    (package / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_FALLBACK_DIR", package)
    with pytest.raises(CalibenchError, match="t10k-labels-idx1-ubyte.gz.*corrupt"):
        load("fashion_mnist", tmp_path / "data")


def test_mnist_bad_labels(tmp_path: Path) -> None:
    write_fake_mnist_raw(tmp_path, dataset="MNIST", gz=True)
    write_idx(tmp_path / "MNIST" / "raw" / f"{IDX_NAMES[1]}.gz", np.full(30, 12, dtype=np.uint8))
    with pytest.raises(CalibenchError, match="labels range"):
        load("mnist", tmp_path)


def test_real_debian_fashion_mnist(tmp_path: Path) -> None:
    if not all((DEBIAN_FASHION / f"{name}.gz").is_file() for name in IDX_NAMES):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    data = load("fashion_mnist", tmp_path)
    assert len(data.train) + len(data.val) == 60_000 and len(data.val) == 5000
    assert len(data.test) == 10_000
    assert data.train.images.shape[1:] == (1, 28, 28)
    assert len(data.class_names) == 10
    assert set(data.test.labels.tolist()) == set(range(10))
    with gzip.open(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        assert data.test.labels.tolist() == list(f.read()[8:])


# Tiny-ImageNet


def test_tiny_imagenet_round_trip(tmp_path: Path) -> None:
    fake = write_fake_tiny_imagenet(tmp_path, n_classes=3, n_train_per_class=20, n_val_per_class=2)
    data = load("tiny_imagenet", tmp_path)
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == (3, 64, 64)
        assert split.labels.dtype == torch.int64
    assert len(data.test) == 6 and len(data.val) == 3 * 2 and len(data.train) == 3 * 18
    assert np.bincount(data.val.labels.numpy()).tolist() == [2, 2, 2]
    assert np.array_equal(np.union1d(data.train_indices, data.val_indices), np.arange(60))
    assert np.intersect1d(data.train_indices, data.val_indices).size == 0
    tolerance = 4
    got = data.train.images.numpy().astype(int)
    assert np.abs(got - fake.train_images[data.train_indices]).max() <= tolerance
    assert np.abs(data.test.images.numpy().astype(int) - fake.test_images).max() <= tolerance
    assert np.array_equal(data.train.labels.numpy(), fake.train_labels[data.train_indices])
    assert np.array_equal(data.test.labels.numpy(), fake.test_labels)
    assert data.class_names == fake.class_names
    wnids = (tmp_path / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert wnids != sorted(wnids)


def test_tiny_imagenet_split_is_seeded(tmp_path: Path) -> None:
    write_fake_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=30, n_val_per_class=1)
    a, b, c = (load("tiny_imagenet", tmp_path, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.val_indices, b.val_indices)
    assert not np.array_equal(a.val_indices, c.val_indices)


def test_tiny_imagenet_grayscale_becomes_rgb(tmp_path: Path) -> None:
    from PIL import Image

    write_fake_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=10, n_val_per_class=1)
    gray = np.full((64, 64), 120, dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "tiny-imagenet-200/val/images/val_0.JPEG")
    test = load("tiny_imagenet", tmp_path).test
    assert np.abs(test.images[0].numpy().astype(int) - 120).max() <= 2


def test_tiny_imagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError) as err:
        load("tiny_imagenet", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert "wnids.txt" in message and "val_annotations.txt" in message
    assert "tiny-imagenet-200.zip" in message


def test_tiny_imagenet_truncated_jpeg(tmp_path: Path) -> None:
    write_fake_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=10, n_val_per_class=1)
    path = tmp_path / "tiny-imagenet-200" / "train" / "n00001000" / "images" / "n00001000_4.JPEG"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CalibenchError, match="n00001000_4.JPEG.*corrupt"):
        load("tiny_imagenet", tmp_path)


def test_tiny_imagenet_unknown_wnid_in_annotations(tmp_path: Path) -> None:
    write_fake_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=10, n_val_per_class=1)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(CalibenchError, match="val_annotations.txt.*line 3"):
        load("tiny_imagenet", tmp_path)


def test_tiny_imagenet_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(CalibenchError, match="could not download.*tiny_imagenet.*no network"):
        load("tiny_imagenet", tmp_path, download=True)


def test_make_loader_picks_the_loader_and_gather_matches_the_batches(tmp_path: Path) -> None:
    from fake_datasets import write_fake_imagenet

    from calibench.data import DeviceLoader, LoaderConfig, StreamLoader, load_dataset, make_loader
    from calibench.data.imagenet import imagenet_dataset, load_imagenet

    cpu = torch.device("cpu")
    digits = load_dataset("digits", "", False, 0)
    memory = make_loader(LoaderConfig(digits.test, DATASETS.get("digits"), 100, cpu))
    assert isinstance(memory, DeviceLoader) and len(memory) == 4
    batches = torch.cat([x for x, _ in memory])
    assert torch.equal(memory.gather([5, 0, 359]), batches[[5, 0, 359]])
    write_fake_imagenet(tmp_path)
    test = load_imagenet(DataRequest(tmp_path), num_classes=3).test
    spec = imagenet_dataset("imagenet_gather", num_classes=3, crop_size=12, resize_size=14)
    streamed = make_loader(LoaderConfig(test, spec, 4, cpu, workers=0))
    assert isinstance(streamed, StreamLoader) and len(streamed) == 2
    batches = torch.cat([x for x, _ in streamed])
    assert torch.equal(streamed.gather([4, 1]), batches[[4, 1]])


def test_loader_stream_is_the_same_with_and_without_indices() -> None:
    spec = DATASETS.get("digits")
    data = load_dataset("digits", "", False, 0)
    plain_gen, indexed_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    cpu = torch.device("cpu")
    plain = DeviceLoader(LoaderConfig(data.train, spec, 64, cpu, True, plain_gen))
    indexed = DeviceLoader(LoaderConfig(data.train, spec, 64, cpu, True, indexed_gen))
    for _ in range(2):
        seen = []
        for (x, y), (xi, yi, idx) in zip(plain, indexed.indexed(), strict=True):
            assert torch.equal(x, xi) and torch.equal(y, yi)
            assert torch.equal(data.train.labels[idx], y)
            seen.append(idx)
        epoch = torch.cat(seen)
        assert len(epoch.unique()) == len(epoch) == len(data.train) // 64 * 64
    assert torch.equal(plain_gen.get_state(), indexed_gen.get_state())
    val = DeviceLoader(LoaderConfig(data.val, spec, 50, torch.device("cpu")))
    for x, _, idx in val.indexed():
        assert torch.equal(x, val.normalise(data.val.images[idx]))


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
