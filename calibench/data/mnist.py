"""MNIST and Fashion-MNIST (28x28 grayscale, 10 classes, 60k train / 10k test).

Where the bytes come from, first match wins:

1. torchvision's layout, ``ROOT/MNIST/raw/`` or ``ROOT/FashionMNIST/raw/`` holding the four
   unpacked idx files (or torchvision's old ``processed/`` files): read by torchvision;
2. the same folder holding the idx files, some or all still gzipped: read by :func:`read_idx`;
3. ``request.download``: torchvision downloads into the raw folder;
4. Fashion-MNIST only, when the raw folder has none of the files: the Debian/Ubuntu package
   ``dataset-fashion-mnist``, whose four ``.gz`` files lie in :data:`FASHION_MNIST_FALLBACK_DIR`
   (read in place, never written to).

Split: ``min(5000, max(1, n // 10))`` images held out of the 60k training set with a seeded
random split (55k/5k); the official 10k test set is the test split.

Normalisation: MNIST (0.1307,) / (0.3081,), Fashion-MNIST (0.2860,) / (0.3530,).
Augmentation: none for MNIST (digits must not be flipped and are centred); random crop with
padding 2 and horizontal flips for Fashion-MNIST (clothes are left-right symmetric).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from calibench.data.base import DataRequest, DatasetSpec, ImageData, Split, register_dataset
from calibench.data.files import (
    READ_ERRORS,
    check_labels,
    corrupt_file_error,
    explain_read_failure,
    missing_dataset_error,
    random_holdout,
)

FASHION_MNIST_FALLBACK_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped idx files."""

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (gzipped if its name ends in ``.gz``) into a native-order array.

    Format: two zero bytes, a type code, the number of dimensions d, then d big-endian uint32
    sizes and the values in row-major order. A short, long or malformed file raises ValueError.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("bad magic number: not an idx file")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise ValueError(f"unknown idx type code 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError("truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{len(data)} bytes where shape {shape} needs {expected}")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_mnist(request: DataRequest) -> ImageData:
    """Load MNIST (torchvision layout under ``ROOT/MNIST/raw``), seeded 5k validation split."""
    how = (
        f"copy the four files {', '.join(n + '.gz' for n in IDX_NAMES)} (gzipped or unpacked) "
        f"from https://ossci-datasets.s3.amazonaws.com/mnist/ into {_raw_folder(request, 'MNIST')}"
    )
    return _load_idx_dataset(request, "mnist", "MNIST", how, fallback=None)


def load_fashion_mnist(request: DataRequest) -> ImageData:
    """Load Fashion-MNIST from ``ROOT/FashionMNIST/raw`` or the Debian package's folder."""
    raw = _raw_folder(request, "FashionMNIST")
    how = (
        f"copy the four files {', '.join(n + '.gz' for n in IDX_NAMES)} from "
        f"https://github.com/zalandoresearch/fashion-mnist into {raw}, or install the "
        f"Debian/Ubuntu package (apt-get install dataset-fashion-mnist): calibench reads its "
        f"files from {FASHION_MNIST_FALLBACK_DIR} when {raw} has none"
    )
    return _load_idx_dataset(
        request, "fashion_mnist", "FashionMNIST", how, fallback=FASHION_MNIST_FALLBACK_DIR
    )


def _raw_folder(request: DataRequest, class_name: str) -> Path:
    return Path(request.root) / class_name / "raw"


def _load_idx_dataset(
    request: DataRequest, dataset: str, class_name: str, how: str, fallback: Path | None
) -> ImageData:
    from torchvision.datasets import mnist as tv_mnist

    cls = getattr(tv_mnist, class_name)
    raw = _raw_folder(request, class_name)
    processed = raw.parent / "processed"
    unpacked = all((raw / name).is_file() for name in IDX_NAMES)
    legacy = all((processed / name).is_file() for name in (cls.training_file, cls.test_file))
    local = [_find_idx(raw, name) for name in IDX_NAMES]
    if unpacked or legacy or (request.download and None in local):
        arrays = _read_with_torchvision(cls, request, dataset, raw, how)
    elif None not in local:
        arrays = _read_files([p for p in local if p is not None], dataset, how)
    elif fallback is not None and all(p is None for p in local) and _has_gz(fallback):
        arrays = _read_files([fallback / f"{name}.gz" for name in IDX_NAMES], dataset, how)
    else:
        missing = [f"{name}(.gz)" for name, p in zip(IDX_NAMES, local, strict=True) if p is None]
        raise missing_dataset_error(dataset, raw, missing, how)
    train_x, train_y, test_x, test_y = arrays
    check_labels(train_y, 10, dataset, raw, how)
    check_labels(test_y, 10, dataset, raw, how)
    return random_holdout(
        train_x.unsqueeze(1).contiguous(),
        train_y,
        Split(test_x.unsqueeze(1).contiguous(), test_y),
        request,
        list(cls.classes),
        dataset,
    )


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_gz(folder: Path) -> bool:
    return all((folder / f"{name}.gz").is_file() for name in IDX_NAMES)


def _read_with_torchvision(
    cls: type, request: DataRequest, dataset: str, raw: Path, how: str
) -> list[torch.Tensor]:
    try:
        train = cls(root=str(request.root), train=True, download=request.download)
        test = cls(root=str(request.root), train=False, download=False)
    except READ_ERRORS as exc:
        raise explain_read_failure(
            dataset, raw, list(IDX_NAMES), exc, download=request.download, how=how, read=read_idx
        ) from exc
    return [train.data, train.targets.long(), test.data, test.targets.long()]


def _read_files(paths: list[Path], dataset: str, how: str) -> list[torch.Tensor]:
    arrays = []
    for path in paths:
        try:
            arrays.append(read_idx(path))
        except READ_ERRORS as exc:
            raise corrupt_file_error(dataset, path, exc, how) from exc
    _check_pair(arrays[0], arrays[1], paths[0], dataset, how)
    _check_pair(arrays[2], arrays[3], paths[2], dataset, how)
    return [
        torch.from_numpy(arrays[0].astype(np.uint8, copy=False)),
        torch.from_numpy(arrays[1].astype(np.int64)),
        torch.from_numpy(arrays[2].astype(np.uint8, copy=False)),
        torch.from_numpy(arrays[3].astype(np.int64)),
    ]


def _check_pair(
    images: np.ndarray, labels: np.ndarray, image_path: Path, dataset: str, how: str
) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        found = f"{images.dtype} images of shape {images.shape}, expected uint8 (N, 28, 28)"
        raise corrupt_file_error(dataset, image_path, found, how)
    if labels.ndim != 1 or len(labels) != len(images):
        raise corrupt_file_error(
            dataset, image_path, f"{len(images)} images but labels of shape {labels.shape}", how
        )


MNIST = register_dataset(
    DatasetSpec(
        name="mnist",
        num_classes=10,
        in_channels=1,
        image_size=28,
        mean=(0.1307,),
        std=(0.3081,),
        load=load_mnist,
        description="MNIST digits, 55k train / 5k val / 10k test, 28x28 grayscale",
    )
)

FASHION_MNIST = register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        num_classes=10,
        in_channels=1,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
        load=load_fashion_mnist,
        crop_padding=2,
        hflip=True,
        description="Fashion-MNIST, 55k train / 5k val / 10k test, 28x28 grayscale; offline via "
        "the Debian package dataset-fashion-mnist",
    )
)
