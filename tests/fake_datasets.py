"""Tiny datasets written in each dataset's exact on-disk format, for tests.

Every writer takes the root folder a :class:`~calibench.data.DataRequest` would use, draws seeded
random images and labels, writes them the way the real download lays them out, and returns the
written arrays as :class:`FakeData` in calibench's own layout (uint8 (N, C, H, W), int64 labels,
the test split, class names) so a test can compare what the loader gives back.

CIFAR and SVHN files fail torchvision's MD5 check: patch it in the test (see
``bypass_md5`` in tests/conftest.py).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
]
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class FakeData:
    """What a fake writer put on disk, in calibench's layout."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


def _images(rng: np.random.Generator, n: int, channels: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def _labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64) % num_classes
    return rng.permutation(labels)


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_fake_cifar10(
    root: Path, n_train_per_batch: int = 4, n_test: int = 6, seed: int = 0
) -> FakeData:
    """Write ``ROOT/cifar-10-batches-py`` with 5 training batches, a test batch and the meta file.

    Each batch is a pickled dict with ``data`` (N, 3072) uint8 rows (red, green, blue planes of
    32x32, row-major) and ``labels`` (a list), as the python version of CIFAR-10 stores it.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"class{k}" for k in range(10)]
    n_train = 5 * n_train_per_batch
    train_x, train_y = _images(rng, n_train, 3, 32), _labels(rng, n_train, 10)
    test_x, test_y = _images(rng, n_test, 3, 32), _labels(rng, n_test, 10)
    for b in range(5):
        part = slice(b * n_train_per_batch, (b + 1) * n_train_per_batch)
        batch = {
            "batch_label": f"training batch {b + 1} of 5",
            "labels": [int(v) for v in train_y[part]],
            "data": train_x[part].reshape(-1, 3072),
            "filenames": [f"img_{b}_{i}.png" for i in range(n_train_per_batch)],
        }
        _pickle(folder / f"data_batch_{b + 1}", batch)
    test_batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(v) for v in test_y],
        "data": test_x.reshape(-1, 3072),
        "filenames": [f"test_{i}.png" for i in range(n_test)],
    }
    _pickle(folder / "test_batch", test_batch)
    meta = {"num_cases_per_batch": n_train_per_batch, "label_names": names, "num_vis": 3072}
    _pickle(folder / "batches.meta", meta)
    return FakeData(train_x, train_y, test_x, test_y, names)


def write_fake_cifar100(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> FakeData:
    """Write ``ROOT/cifar-100-python/{train, test, meta}`` with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"fine{k}" for k in range(100)]
    train_x, train_y = _images(rng, n_train, 3, 32), _labels(rng, n_train, 100)
    test_x, test_y = _images(rng, n_test, 3, 32), _labels(rng, n_test, 100)
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        content = {
            "filenames": [f"{name}_{i}.png" for i in range(len(y))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": [int(v) for v in y],
            "coarse_labels": [int(v) // 5 for v in y],
            "data": x.reshape(-1, 3072),
        }
        _pickle(folder / name, content)
    coarse = [f"coarse{k}" for k in range(20)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": coarse})
    return FakeData(train_x, train_y, test_x, test_y, names)


def write_fake_svhn(root: Path, n_train: int = 20, n_test: int = 8, seed: int = 0) -> FakeData:
    """Write ``ROOT/{train,test}_32x32.mat``: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) in 1..10.

    The returned labels are calibench's (digit 0 as 0); the files store it as 10.
    """
    import scipy.io

    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    data = []
    for name, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 3, 32), _labels(rng, n, 10)
        stored = np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)
        on_disk = np.ascontiguousarray(x.transpose(2, 3, 1, 0))
        scipy.io.savemat(str(Path(root) / f"{name}_32x32.mat"), {"X": on_disk, "y": stored})
        data += [x, y]
    return FakeData(*data, class_names=[str(k) for k in range(10)])


def write_idx(path: Path, values: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzipped when ``path`` ends in ``.gz``)."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    header = bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    payload = header + values.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_fake_mnist_raw(
    root: Path,
    n_train: int = 30,
    n_test: int = 10,
    *,
    dataset: str = "MNIST",
    gz: bool = False,
    folder: Path | None = None,
    seed: int = 0,
) -> FakeData:
    """Write the four idx files torchvision's ``MNIST``/``FashionMNIST`` read.

    They go to ``ROOT/<dataset>/raw/`` (``dataset`` is ``"MNIST"`` or ``"FashionMNIST"``) unless
    ``folder`` is given; ``gz=True`` writes the gzipped ``.gz`` files as they are downloaded.
    """
    rng = np.random.default_rng(seed)
    target = Path(folder) if folder is not None else Path(root) / dataset / "raw"
    train_x, train_y = _images(rng, n_train, 1, 28), _labels(rng, n_train, 10)
    test_x, test_y = _images(rng, n_test, 1, 28), _labels(rng, n_test, 10)
    suffix = ".gz" if gz else ""
    for name, values in zip(IDX_NAMES, (train_x[:, 0], train_y, test_x[:, 0], test_y), strict=True):
        write_idx(target / f"{name}{suffix}", values)
    names = FASHION_CLASSES if dataset == "FashionMNIST" else MNIST_CLASSES
    return FakeData(train_x, train_y, test_x, test_y, names)


def write_fake_tiny_imagenet(
    root: Path,
    n_classes: int = 3,
    n_train_per_class: int = 10,
    n_val_per_class: int = 2,
    seed: int = 0,
) -> FakeData:
    """Write a ``ROOT/tiny-imagenet-200`` tree of 64x64 JPEGs with wnids, words and val labels.

    Each image is two flat colour blocks (left and right halves, 8x8-aligned) so that JPEG at
    quality 100 without chroma subsampling reproduces it to within a few levels; the returned
    arrays are the intended pixels, training images in wnids.txt class order and file-name order
    within a class, test images in val_annotations.txt order.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{1000 + k:08d}" for k in reversed(range(n_classes))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}, other name\n" for w in wnids))

    def draw(path: Path) -> np.ndarray:
        colours = rng.integers(16, 240, size=(2, 3), dtype=np.uint8)
        pixels = np.empty((64, 64, 3), dtype=np.uint8)
        pixels[:, :32], pixels[:, 32:] = colours[0], colours[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, format="JPEG", quality=100, subsampling=0)
        return pixels.transpose(2, 0, 1)

    train_x, train_y = [], []
    for k, wnid in enumerate(wnids):
        names = sorted(f"{wnid}_{i}.JPEG" for i in range(n_train_per_class))
        for name in names:
            train_x.append(draw(folder / "train" / wnid / "images" / name))
            train_y.append(k)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    test_x, test_y, lines = [], [], []
    order = rng.permutation(n_classes * n_val_per_class) % n_classes
    for i, k in enumerate(order):
        test_x.append(draw(folder / "val" / "images" / f"val_{i}.JPEG"))
        test_y.append(int(k))
        lines.append(f"val_{i}.JPEG\t{wnids[k]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return FakeData(
        np.stack(train_x),
        np.asarray(train_y, dtype=np.int64),
        np.stack(test_x),
        np.asarray(test_y, dtype=np.int64),
        [f"thing {w}" for w in wnids],
    )


@dataclass
class FakeCorrupted:
    """What a fake -C writer put on disk: per corruption, the images of severities 1..5 stacked
    (5 n, C, H, W) in calibench's layout, and the labels of those rows (5 n,)."""

    images: dict[str, np.ndarray]
    labels: np.ndarray


def write_fake_cifar_c(
    root: Path,
    corruptions: list[str],
    test_labels: np.ndarray,
    folder: str = "CIFAR-10-C",
    seed: int = 0,
) -> FakeCorrupted:
    """Write ``ROOT/<folder>/`` as the CIFAR-10-C / CIFAR-100-C archives lay it out.

    ``labels.npy`` holds 5 n uint8 labels, severity s in rows [(s - 1) n, s n); each severity
    block is a seeded permutation of ``test_labels`` (same images per class, its own order), so a
    loader that pairs rows wrongly fails. ``<corruption>.npy`` is uint8 (5 n, 32, 32, 3).
    """
    rng = np.random.default_rng(seed)
    target = Path(root) / folder
    target.mkdir(parents=True, exist_ok=True)
    labels = np.concatenate([rng.permutation(test_labels) for _ in range(5)]).astype(np.uint8)
    np.save(target / "labels.npy", labels)
    images = {}
    for corruption in corruptions:
        pixels = _images(rng, len(labels), 3, 32)
        np.save(target / f"{corruption}.npy", np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)))
        images[corruption] = pixels
    return FakeCorrupted(images, labels.astype(np.int64))


def write_fake_tiny_imagenet_c(
    root: Path,
    corruptions: list[str],
    wnids: list[str],
    per_class: int = 2,
    seed: int = 0,
) -> FakeCorrupted:
    """Write ``ROOT/Tiny-ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG`` (64x64).

    Images are two flat colour blocks as in :func:`write_fake_tiny_imagenet` (JPEG quality 100
    keeps them within a few levels). The returned arrays list each severity's images in
    ``wnids`` order (the class index order), file-name order within a class.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "Tiny-ImageNet-C"
    images: dict[str, np.ndarray] = {}
    labels = np.repeat(np.arange(len(wnids)), per_class)
    for corruption in corruptions:
        written = []
        for severity in range(1, 6):
            for wnid in wnids:
                for i in range(per_class):
                    colours = rng.integers(16, 240, size=(2, 3), dtype=np.uint8)
                    pixels = np.empty((64, 64, 3), dtype=np.uint8)
                    pixels[:, :32], pixels[:, 32:] = colours[0], colours[1]
                    path = folder / corruption / str(severity) / wnid / f"val_{i}.JPEG"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(path, format="JPEG", quality=100, subsampling=0)
                    written.append(pixels.transpose(2, 0, 1))
        images[corruption] = np.stack(written)
    return FakeCorrupted(images, np.tile(labels, 5).astype(np.int64))


COLOURS = {"blue": (40, 60, 200), "green": (50, 190, 70), "red": (210, 50, 40)}
"""Three well separated colours, by class name (sorted names: blue, green, red)."""


def write_colour_folders(
    root: Path,
    train_per_class: int = 6,
    test_per_class: int = 3,
    val_per_class: int = 0,
    size: int = 8,
    channels: int = 3,
    seed: int = 0,
) -> dict[str, FakeData]:
    """Write ``root/{train,test[,val]}/<colour>/<i>.png``: flat images of each class's colour
    plus seeded noise of +-30 levels, lossless PNG (grayscale when ``channels`` is 1: the
    colour's mean). Returns each split's pixels in calibench's layout (classes in sorted name
    order, file names in order within a class)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = sorted(COLOURS)
    written: dict[str, FakeData] = {}
    counts = {"train": train_per_class, "test": test_per_class, "val": val_per_class}
    for split, n in counts.items():
        xs, ys = [], []
        for k, name in enumerate(classes):
            base = np.array(COLOURS[name], dtype=np.int64)
            if channels == 1:
                base = base.mean(keepdims=True).round().astype(np.int64)
            for i in range(n):
                noise = rng.integers(-30, 31, size=(size, size, channels))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                path = Path(root) / split / name / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)
                xs.append(pixels.transpose(2, 0, 1))
                ys.append(k)
        if n:
            written[split] = FakeData(
                np.stack(xs), np.asarray(ys, dtype=np.int64), np.empty(0), np.empty(0), classes
            )
    return written


IMAGENET_WNIDS = ["n01440764", "n01443537", "n01484850"]


def write_fake_imagenet(
    root: Path, train_per_class: int = 6, val_per_class: int = 2, seed: int = 0
) -> None:
    """ImageNet's ImageFolder layout, ``ROOT/imagenet/{train,val}/<wnid>/*.JPEG``: images of
    32x40 or 40x32 whose channel k is bright for class k (:data:`IMAGENET_WNIDS`)."""
    from torchvision.io import write_jpeg

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k, wnid in enumerate(IMAGENET_WNIDS):
            folder = Path(root) / "imagenet" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (32, 40) if i % 2 else (40, 32)
                image = torch.from_numpy(rng.integers(0, 128, (3, h, w), dtype=np.uint8))
                image[k] += 127
                write_jpeg(image, str(folder / f"{wnid}_{i}.JPEG"), quality=95)


def write_fake_imagenet_c(
    root: Path,
    corruptions: list[str],
    per_class: int = 2,
    size: int = 16,
    seed: int = 0,
) -> FakeCorrupted:
    """``ROOT/ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG``, ``size`` x ``size`` images
    (the release's are 224x224) whose channel k is bright for class k. Returns the written
    pixels per corruption, severities 1..5 stacked, classes in wnid order."""
    from torchvision.io import decode_jpeg, encode_jpeg

    rng = np.random.default_rng(seed)
    images: dict[str, np.ndarray] = {}
    labels = np.tile(np.repeat(np.arange(len(IMAGENET_WNIDS)), per_class), 5)
    for corruption in corruptions:
        written = []
        for severity in range(1, 6):
            for k, wnid in enumerate(IMAGENET_WNIDS):
                folder = Path(root) / "ImageNet-C" / corruption / str(severity) / wnid
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    image = torch.from_numpy(rng.integers(0, 128, (3, size, size), dtype=np.uint8))
                    image[k] += 127
                    data = encode_jpeg(image, quality=95)
                    (folder / f"{wnid}_{i}.JPEG").write_bytes(data.numpy().tobytes())
                    written.append(decode_jpeg(data).numpy())
        images[corruption] = np.stack(written)
    return FakeCorrupted(images, labels.astype(np.int64))
