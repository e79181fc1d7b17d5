"""Helpers shared by the file-backed datasets: split sizes, seeded splits and clear errors.

Split rules (docs/protocol.md, "Training"):

- a random held-out validation set of ``min(5000, max(1, n // 10))`` training images, so the
  full CIFAR-10/100 train set gives 45k/5k and MNIST-sized sets 55k/5k, while tiny test files
  still hold out 10%;
- a per-class held-out set of 50 images per class when every class has more than 50 images,
  else ``max(1, smallest_class // 10)`` per class (Tiny-ImageNet).

Every user-facing failure (missing files, a failed download, a corrupt or truncated file) is a
single :class:`~calibench.errors.CalibenchError` whose message names the folder or file and says
how to get a good copy.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import torch

from calibench.data.base import (
    DataRequest,
    ImageData,
    Split,
    random_split_indices,
    split_train_set,
    stratified_split_indices,
)
from calibench.errors import CalibenchError

MAX_VAL = 5000
VAL_PER_CLASS = 50

READ_ERRORS: Final = (  # a fixed tuple: mypy checks except (*READ_ERRORS, ...)
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    RuntimeError,
    AssertionError,
    NotImplementedError,
    pickle.UnpicklingError,
    struct.error,
    zlib.error,
)
"""What reading a damaged or truncated dataset file can raise (pickle, scipy, gzip, PIL, torch)."""


def holdout_size(n_train: int, cap: int = MAX_VAL) -> int:
    """Validation images to hold out of ``n_train``: 10% of it (at least 1), at most ``cap``."""
    return min(cap, max(1, n_train // 10))


def holdout_per_class(smallest_class: int, full: int = VAL_PER_CLASS) -> int:
    """Validation images per class: ``full`` if every class has more, else 10% (at least 1)."""
    return full if smallest_class > full else max(1, smallest_class // 10)


def missing_files(folder: Path, names: Iterable[str]) -> list[str]:
    """The entries of ``names`` that are not regular files in ``folder``."""
    return [name for name in names if not (folder / name).is_file()]


def missing_dataset_error(
    dataset: str, folder: Path, missing: Sequence[str], how: str
) -> CalibenchError:
    """The one-paragraph error for a dataset whose files are not on disk.

    ``how`` finishes the sentence "... or ..." with where the files can be copied from.
    """
    return CalibenchError(
        f"dataset {dataset!r} not found: {', '.join(missing)} missing in {folder}. "
        f"Run again with --download on a machine with a network to fetch it, or {how}."
    )


def download_error(dataset: str, folder: Path, exc: BaseException, how: str) -> CalibenchError:
    """The error for a download that failed (no network, server gone, bad archive)."""
    return CalibenchError(
        f"could not download dataset {dataset!r} into {folder}: {_describe(exc)}. "
        f"Without a network, {how}."
    )


def corrupt_file_error(
    dataset: str, path: Path, reason: BaseException | str, how: str
) -> CalibenchError:
    """The error for a dataset file that exists but cannot be read as the expected format."""
    why = reason if isinstance(reason, str) else _describe(reason)
    return CalibenchError(
        f"dataset {dataset!r}: cannot read {path}: the file is corrupt, truncated or not in the "
        f"expected format ({why}). Delete it and get a fresh copy: run with --download on a "
        f"machine with a network, or {how}."
    )


def find_unreadable(
    paths: Iterable[Path], read: Callable[[Path], object]
) -> tuple[Path, BaseException] | None:
    """The first of ``paths`` that ``read`` fails on, with the error; None if all read."""
    for path in paths:
        try:
            read(path)
        except READ_ERRORS as exc:
            return path, exc
    return None


def explain_read_failure(
    dataset: str,
    folder: Path,
    names: Sequence[str],
    exc: BaseException,
    *,
    download: bool,
    how: str,
    md5_ok: Callable[[str], bool] | None = None,
    read: Callable[[Path], object] | None = None,
) -> CalibenchError:
    """Turn an error from a third-party reader (torchvision) into the clear error it means.

    Files missing after the attempt mean a failed download or an absent dataset. Otherwise the
    first file that fails ``md5_ok`` (a checksum check) or ``read`` (a parse that raises on a
    damaged file) is named; failing those, the folder is named with the original error.
    """
    missing = missing_files(folder, names)
    if missing:
        if download:
            return download_error(dataset, folder, exc, how)
        return missing_dataset_error(dataset, folder, missing, how)
    if md5_ok is not None:
        for name in names:
            if not md5_ok(name):
                return corrupt_file_error(dataset, folder / name, "MD5 checksum mismatch", how)
    if read is not None:
        found = find_unreadable((folder / name for name in names), read)
        if found is not None:
            return corrupt_file_error(dataset, found[0], found[1], how)
    return corrupt_file_error(dataset, folder, exc, how)


def check_labels(
    labels: torch.Tensor, num_classes: int, dataset: str, where: Path, how: str
) -> None:
    """Raise the corrupt-file error unless every label lies in ``[0, num_classes)``."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise corrupt_file_error(
            dataset,
            where,
            f"labels range {int(labels.min())}..{int(labels.max())}, expected 0..{num_classes - 1}",
            how,
        )


def unpickle(path: Path) -> object:
    """Load a pickle the way torchvision reads the CIFAR batches (latin1 for Python 2 str)."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def random_holdout(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: Split,
    request: DataRequest,
    class_names: Sequence[str],
    dataset: str,
) -> ImageData:
    """Split a full training set with :func:`holdout_size` validation images, seeded."""
    n = len(labels)
    if n < 2:
        raise CalibenchError(
            f"dataset {dataset!r} has {n} training image(s) under {request.root}; at least 2 are "
            "needed to hold out a validation split."
        )
    train_idx, val_idx = random_split_indices(n, holdout_size(n), request.split_seed)
    return split_train_set(images, labels, test, train_idx, val_idx, list(class_names))


def stratified_holdout(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: Split,
    request: DataRequest,
    class_names: Sequence[str],
    dataset: str,
) -> ImageData:
    """Split a full training set with :func:`holdout_per_class` images per class, seeded."""
    counts = np.bincount(labels.numpy(), minlength=len(class_names))
    smallest = int(counts.min()) if len(counts) else 0
    if smallest < 2:
        raise CalibenchError(
            f"dataset {dataset!r} under {request.root} has a class with {smallest} training "
            "image(s); every class needs at least 2 to hold out a validation split."
        )
    train_idx, val_idx = stratified_split_indices(
        labels.numpy(), holdout_per_class(smallest), request.split_seed
    )
    return split_train_set(images, labels, test, train_idx, val_idx, list(class_names))


def _describe(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
