"""ImageNet (ILSVRC-2012, 1000 classes), streamed from the standard folder tree.

On disk, torchvision ``ImageFolder``'s layout: ``ROOT/imagenet/train/<wnid>/*.JPEG`` (about 1.28M
images) and ``ROOT/imagenet/val/<wnid>/*.JPEG`` (50k). The classes are the sorted names of the
``train/`` folders (as ImageFolder orders them). The official validation images come as one flat
folder; docs/imagenet.md shows how to sort them into class folders with the devkit's ground truth.

Split: 10 images per class held out of the training set, chosen with a seeded stratified split
(the validation set, 10k images, used for model selection and temperature fitting); when a class
has 10 images or fewer (small copies), ``max(1, smallest // 10)`` per class. The official
validation set is the TEST split, as for Tiny-ImageNet.

The data does not fit on a device, so the dataset is streamed (calibench/data/stream.py):
training views are random resized crops to 224 with horizontal flips, evaluation views a resize
of the shorter side to 256 and a central 224 crop; normalisation with ImageNet's mean (0.485,
0.456, 0.406) and std (0.229, 0.224, 0.225). :func:`imagenet_dataset` builds variants with other
sizes (tests use tiny ones).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from calibench.data.base import (
    DataRequest,
    DatasetSpec,
    FileSplit,
    ImageData,
    StreamTransform,
    register_dataset,
    stratified_split_indices,
)
from calibench.data.files import READ_ERRORS, holdout_per_class, missing_dataset_error
from calibench.errors import CalibenchError

FOLDER = "imagenet"
VAL_PER_CLASS = 10
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
HOW = (
    "put the ILSVRC-2012 images under {folder}/train/<wnid>/ and {folder}/val/<wnid>/ as "
    "docs/imagenet.md describes (the flat official val folder must be sorted into class folders)"
)


def load_imagenet(
    request: DataRequest,
    dataset: str = "imagenet",
    num_classes: int = 1000,
    folder_name: str = FOLDER,
    val_per_class: int = VAL_PER_CLASS,
) -> ImageData:
    """List ImageNet's files: train minus a seeded ``val_per_class`` validation set; the
    official validation images as test."""
    folder = Path(request.root) / folder_name
    how = HOW.format(folder=folder)
    if request.download:
        raise CalibenchError(
            f"dataset {dataset!r} cannot be downloaded by calibench (its licence requires a "
            f"login at image-net.org); {how}."
        )
    missing = [name for name in ("train/", "val/") if not (folder / name).is_dir()]
    if missing:
        raise missing_dataset_error(dataset, folder, missing, how)
    wnids = class_folders(folder / "train", dataset, how)
    if len(wnids) != num_classes:
        raise CalibenchError(
            f"dataset {dataset!r}: {folder / 'train'} holds {len(wnids)} class folders, expected "
            f"{num_classes}; {how}."
        )
    train = list_split(folder / "train", wnids, dataset, how)
    test = list_split(folder / "val", wnids, dataset, how)
    counts = np.bincount(train.labels.numpy(), minlength=num_classes)
    if counts.min() < 2:
        raise CalibenchError(
            f"dataset {dataset!r}: class {wnids[int(counts.argmin())]} has {int(counts.min())} "
            "training image(s); every class needs at least 2 to hold out a validation split."
        )
    train_idx, val_idx = stratified_split_indices(
        train.labels.numpy(),
        holdout_per_class(int(counts.min()), val_per_class),
        request.split_seed,
    )
    return ImageData(
        train=train.subset(train_idx),
        val=train.subset(val_idx),
        test=test,
        train_indices=train_idx,
        val_indices=val_idx,
        class_names=wnids,
    )


def class_folders(folder: Path, dataset: str, how: str) -> list[str]:
    """The sorted names of the class folders under ``folder`` (ImageFolder's class order)."""
    try:
        return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    except READ_ERRORS as exc:
        raise CalibenchError(f"dataset {dataset!r}: cannot list {folder} ({exc}); {how}.") from exc


def list_split(folder: Path, wnids: list[str], dataset: str, how: str) -> FileSplit:
    """Every image under ``folder/<wnid>/`` with the wnid's index in ``wnids`` as its label;
    files directly in ``folder`` (the official flat val layout) or an unknown class folder are
    errors."""
    index = {wnid: k for k, wnid in enumerate(wnids)}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except READ_ERRORS as exc:
        raise CalibenchError(f"dataset {dataset!r}: cannot list {folder} ({exc}); {how}.") from exc
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]
    if loose:
        raise CalibenchError(
            f"dataset {dataset!r}: {folder} holds images directly ({loose[0]}, ...), not in "
            f"class folders; {how}."
        )
    files: list[str] = []
    labels: list[int] = []
    for entry in entries:
        if not entry.is_dir():
            continue
        if entry.name not in index:
            raise CalibenchError(
                f"dataset {dataset!r}: {folder / entry.name} is not a class of the training set; "
                f"{how}."
            )
        names = sorted(e.name for e in os.scandir(entry.path) if e.is_file() and _is_image(e.name))
        files.extend(f"{entry.name}/{name}" for name in names)
        labels.extend([index[entry.name]] * len(names))
    if not files:
        raise missing_dataset_error(dataset, folder, ["the class folders' images"], how)
    return FileSplit(
        folder, np.array(files, dtype=np.bytes_), torch.tensor(labels, dtype=torch.int64)
    )


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def imagenet_dataset(
    name: str = "imagenet",
    num_classes: int = 1000,
    crop_size: int = 224,
    resize_size: int = 256,
    folder_name: str = FOLDER,
    description: str = "",
) -> DatasetSpec:
    """The spec of an ImageNet-layout dataset with ``num_classes`` class folders under
    ``ROOT/<folder_name>/``, cropped to ``crop_size`` (evaluation: shorter side resized to
    ``resize_size`` first)."""
    if not 0 < crop_size <= resize_size:
        raise ValueError(f"need 0 < crop_size <= resize_size, got {crop_size}, {resize_size}")

    def load(request: DataRequest) -> ImageData:
        return load_imagenet(request, name, num_classes, folder_name)

    load.__qualname__ = f"imagenet_dataset[{name}]"
    return DatasetSpec(
        name=name,
        num_classes=num_classes,
        in_channels=3,
        image_size=crop_size,
        mean=MEAN,
        std=STD,
        load=load,
        hflip=True,
        description=description,
        stream=StreamTransform(crop_size=crop_size, resize_size=resize_size),
    )


IMAGENET = register_dataset(
    imagenet_dataset(
        description="ILSVRC-2012 streamed from ImageFolder layout, 1.27M train / 10k val "
        "(10 per class) / official 50k val as test, 224x224 crops"
    )
)
