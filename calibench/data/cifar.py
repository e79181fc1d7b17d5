"""CIFAR-10 and CIFAR-100, read through torchvision from the standard python pickles.

On disk: ``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``ROOT/cifar-100-python/{train, test, meta}``. torchvision checks every file's MD5 (train and test
files, even when one split is read); a failed check is reported as a corrupt file, naming it.

Split: ``min(5000, max(1, n // 10))`` images held out of the training set with a seeded random
split (45k/5k for the real 50k set); the official 10k test set is the test split.

Normalisation: each dataset's own per-channel mean/std; CIFAR-10 (0.4914, 0.4822, 0.4465) /
(0.2470, 0.2435, 0.2616), CIFAR-100 (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762).
Augmentation: random crop with padding 4 and horizontal flips, as in the reference protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from calibench.data.base import DataRequest, DatasetSpec, ImageData, Split, register_dataset
from calibench.data.files import (
    READ_ERRORS,
    check_labels,
    explain_read_failure,
    random_holdout,
    unpickle,
)

CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


def load_cifar10(request: DataRequest) -> ImageData:
    """Load CIFAR-10 (50k train, 10k test) with a seeded 5k validation split."""
    return _load_cifar(request, "cifar10", "CIFAR10", 10)


def load_cifar100(request: DataRequest) -> ImageData:
    """Load CIFAR-100 with its 100 fine labels and a seeded 5k validation split."""
    return _load_cifar(request, "cifar100", "CIFAR100", 100)


def _load_cifar(request: DataRequest, dataset: str, class_name: str, num_classes: int) -> ImageData:
    from torchvision.datasets import cifar

    cls = getattr(cifar, class_name)
    root = Path(request.root)
    folder = root / cls.base_folder
    checksums = {name: md5 for name, md5 in cls.train_list + cls.test_list}
    checksums[cls.meta["filename"]] = cls.meta["md5"]
    how = (
        f"fetch {cls.filename} from {CIFAR_PAGE} on another machine and unpack it into "
        f"{root} (it creates {cls.base_folder}/)"
    )
    try:
        train = cls(root=str(root), train=True, download=request.download)
        test = cls(root=str(root), train=False, download=False)
    except READ_ERRORS as exc:
        raise explain_read_failure(
            dataset,
            folder,
            list(checksums),
            exc,
            download=request.download,
            how=how,
            md5_ok=lambda name: bool(cifar.check_integrity(str(folder / name), checksums[name])),
            read=lambda path: _read_pickle(path, cls.meta),
        ) from exc
    train_images, train_labels = _as_tensors(train.data, train.targets)
    test_images, test_labels = _as_tensors(test.data, test.targets)
    check_labels(train_labels, num_classes, dataset, folder, how)
    check_labels(test_labels, num_classes, dataset, folder, how)
    return random_holdout(
        train_images,
        train_labels,
        Split(test_images, test_labels),
        request,
        [str(name) for name in train.classes],
        dataset,
    )


def _as_tensors(data: np.ndarray, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    return images, torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def _read_pickle(path: Path, meta: dict[str, str]) -> None:
    entry = unpickle(path)
    if not isinstance(entry, dict):
        raise TypeError(f"expected a pickled dict, got {type(entry).__name__}")
    if path.name == meta["filename"]:
        if meta["key"] not in entry:
            raise KeyError(f"no {meta['key']!r} entry")
        return
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"'data' has shape {data.shape}, expected (N, 3072)")
    labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
    if len(labels) != data.shape[0]:
        raise ValueError(f"{len(labels)} labels for {data.shape[0]} images")


CIFAR10 = register_dataset(
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        load=load_cifar10,
        crop_padding=4,
        hflip=True,
        description="CIFAR-10, 45k train / 5k val / 10k test, 32x32 RGB; torchvision files",
    )
)

CIFAR100 = register_dataset(
    DatasetSpec(
        name="cifar100",
        num_classes=100,
        in_channels=3,
        image_size=32,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        load=load_cifar100,
        crop_padding=4,
        hflip=True,
        description="CIFAR-100 (fine labels), 45k train / 5k val / 10k test; torchvision files",
    )
)
