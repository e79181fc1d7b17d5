"""ImageNet-C (Hendrycks and Dietterich, ICLR 2019): the corrupted ImageNet validation set,
streamed from its JPEG folders like the clean ImageNet.

Layout under the data root: ``ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG``, 50 images per
class at every severity, already resized (shorter side 256) and centre-cropped to 224x224 by the
release script (``ImageNet-C/create_c/make_imagenet_c.py`` in ``hendrycks/robustness``). The
class of a wnid folder is that wnid's class in the clean run's test split, so the labels follow
the clean ImageNet's class order whatever the folder order.

Evaluation view: the release's own test script (``ImageNet-C/test.py``) centre-crops 224 pixels
and does not resize, so calibench evaluates these images with the clean dataset's stream
transform with ``resize_size = crop_size`` (:func:`no_resize`): a 224x224 image is used as it
is, in every other respect (normalisation, decoding) as the clean test images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from calibench.data.base import AnySplit, DatasetSpec, FileSplit
from calibench.data.imagenet import IMAGE_SUFFIXES
from calibench.errors import CalibenchError
from calibench.shift.official import (
    EXTRA_CORRUPTIONS,
    OFFICIAL_SETS,
    SEVERITIES,
    STANDARD_CORRUPTIONS,
    check_block,
    mismatch_error,
    missing_error,
    selected,
)

IMAGENET_C = OFFICIAL_SETS["imagenet-c"]


def no_resize(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` whose evaluation view centre-crops ``crop_size`` pixels without resizing first
    (the view ImageNet-C's test script takes of its pre-cropped images)."""
    if spec.stream is None:
        raise CalibenchError(f"dataset {spec.name!r} is not streamed from image files.")
    stream = dataclasses.replace(spec.stream, resize_size=spec.stream.crop_size)
    return dataclasses.replace(spec, stream=stream)


def imagenet_c_corruptions(root: Path, only: Sequence[str] | None = None) -> tuple[str, ...]:
    """The corruptions to read: ``only`` (each required), else the 15 standard ones (required)
    and then the extra ones found; every one needs its five severity folders."""
    folder = Path(root) / IMAGENET_C.folder
    chosen = selected(only, STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS)
    required = chosen or STANDARD_CORRUPTIONS
    missing = [
        f"{c}/{s}/" for c in required for s in SEVERITIES if not (folder / c / str(s)).is_dir()
    ]
    if missing:
        raise missing_error(IMAGENET_C, folder, missing, Path(root))
    if chosen is not None:
        return chosen
    extra = tuple(c for c in EXTRA_CORRUPTIONS if (folder / c / "1").is_dir())
    return STANDARD_CORRUPTIONS + extra


def class_of_wnid(clean_test: FileSplit) -> dict[str, int]:
    """wnid -> class index, read off the clean test split's files (``<wnid>/<file>``)."""
    wnids = [name.split(b"/", 1)[0].decode() for name in clean_test.files]
    return dict(zip(wnids, clean_test.labels.tolist(), strict=True))


def check_class_folders(where: Path, classes: dict[str, int], root: Path) -> None:
    """``where`` must hold one folder per class of the clean test set, and no other."""
    found = {entry.name for entry in os.scandir(where) if entry.is_dir()}
    unknown = sorted(found - set(classes))
    if unknown:
        why = f"class folders {', '.join(unknown[:5])} are not classes of the clean test set"
        raise mismatch_error(IMAGENET_C, where, why, root)
    absent = [f"{wnid}/" for wnid in classes if wnid not in found]
    if absent:
        raise missing_error(IMAGENET_C, where, absent, root)


def list_severity(where: Path, classes: dict[str, int]) -> tuple[list[str], list[int]]:
    """The images under ``where/<wnid>/`` class by class (file names in order) and labels."""
    files: list[str] = []
    labels: list[int] = []
    for wnid in sorted(classes, key=classes.__getitem__):
        names = sorted(
            e.name
            for e in os.scandir(where / wnid)
            if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
        )
        files += [f"{wnid}/{name}" for name in names]
        labels += [classes[wnid]] * len(names)
    return files, labels


def imagenet_c_test_sets(
    root: Path, clean_test: AnySplit, only: Sequence[str] | None = None
) -> Iterator[tuple[str, int, FileSplit]]:
    """Check the ImageNet-C folders of the chosen corruptions, then yield (corruption,
    severity, split) one at a time, each split a :class:`FileSplit` matched against the clean
    test split (same images per class)."""
    if not isinstance(clean_test, FileSplit):
        raise CalibenchError(
            "--shift imagenet-c needs a dataset streamed from ImageNet's class folders."
        )
    root = Path(root)
    corruptions = imagenet_c_corruptions(root, only)
    classes = class_of_wnid(clean_test)
    for corruption in corruptions:
        for severity in SEVERITIES:
            where = root / IMAGENET_C.folder / corruption / str(severity)
            check_class_folders(where, classes, root)
    return _iterate(root, corruptions, classes, clean_test)


def _iterate(
    root: Path, corruptions: Sequence[str], classes: dict[str, int], clean_test: FileSplit
) -> Iterator[tuple[str, int, FileSplit]]:
    for corruption in corruptions:
        for severity in SEVERITIES:
            where = root / IMAGENET_C.folder / corruption / str(severity)
            files, labels = list_severity(where, classes)
            label_array = np.asarray(labels, dtype=np.int64)
            check_block(IMAGENET_C, where, root, label_array, clean_test, severity)
            names = np.array(files, dtype=np.bytes_)
            yield corruption, severity, FileSplit(where, names, torch.from_numpy(label_array))
