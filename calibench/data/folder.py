"""Image folders declared in the settings: ``format = "imagefolder"`` (docs/protocol.md, "Your
own data").

Layout: ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``, optionally
``<root>/val/<class>/*`` (else a seeded stratified split of train, :mod:`calibench.data.own`).
The classes are the sorted names of the ``train/`` folders (torchvision ``ImageFolder``'s
order); ``test/`` and ``val/`` must hold the same class folders. Images are the files with an
image suffix (:data:`IMAGE_SUFFIXES`), read with PIL; other files are ignored.

Small sets are held in memory (every image stored at its square view, then device-resident
batches); sets larger than :data:`MEMORY_LIMIT` bytes at that size are streamed from the files
(:mod:`calibench.data.stream`), decoded as RGB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calibench.data.base import DataRequest, FileSplit, ImageData, Normalisation, Split
from calibench.data.files import READ_ERRORS, _describe
from calibench.data.own import (
    channel_statistics,
    declared_error,
    holdout_split,
    sample_statistics,
    square_view,
    stream_transform,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision ``ImageFolder``'s image suffixes (case-insensitive)."""
MEMORY_LIMIT = 2 * 1024**3
"""Above this many bytes of uint8 pixels (all splits, at the stored size) a set is streamed."""
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FolderScan:
    """What registration needs to know of an image folder, read without decoding images:
    its classes, the image count of every split, and the first image's channels and size."""

    classes: list[str]
    counts: dict[str, int]
    channels: int
    size: int


def image_names(folder: Path) -> list[str]:
    """The image files directly in ``folder``, sorted by name."""
    entries = os.scandir(folder)
    return sorted(
        e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
    )


def class_folders(folder: Path, name: str) -> list[str]:
    """The sorted class folders of a split folder; loose images or no class folder are errors."""
    if not folder.is_dir():
        raise declared_error(
            name, f"{folder} is missing", "Put the images in train/<class>/ and test/<class>/."
        )
    try:
        loose = image_names(folder)
        found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name[0] != ".")
    except OSError as exc:
        raise declared_error(name, f"cannot list {folder} ({exc.strerror})", "Check it.") from None
    if loose:
        raise declared_error(
            name,
            f"{folder} holds images directly ({loose[0]}, ...), not in class folders",
            f"Move each image into {folder}/<class>/.",
        )
    if not found:
        raise declared_error(
            name, f"{folder} has no class folders", f"Put each class's images in {folder}/<class>/."
        )
    return found


def split_listing(folder: Path, classes: Sequence[str], name: str) -> tuple[list[str], list[int]]:
    """Every image of a split as ``<class>/<file>`` with its class index; the split's class
    folders must be exactly ``classes``, each with at least one image."""
    found = class_folders(folder, name)
    if found != list(classes):
        extra, absent = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        why = "; ".join(
            part
            for part in (
                f"{folder} has classes train/ lacks: {', '.join(extra)}" if extra else "",
                f"{folder} lacks the classes {', '.join(absent)}" if absent else "",
            )
            if part
        )
        raise declared_error(name, f"the classes differ between splits: {why}", "Make them match.")
    files: list[str] = []
    labels: list[int] = []
    for k, cls in enumerate(classes):
        names = image_names(folder / cls)
        if not names:
            suffixes = ", ".join(IMAGE_SUFFIXES)
            raise declared_error(name, f"{folder / cls} holds no image", f"Add {suffixes} files.")
        files += [f"{cls}/{n}" for n in names]
        labels += [k] * len(names)
    return files, labels


def scan_folder(root: Path, name: str) -> FolderScan:
    """List an image folder (class folders, image counts) and read the first training image's
    header for its channels and shorter side."""
    if not root.is_dir():
        raise declared_error(
            name, f"root {root} is not a folder", "Set root to the folder holding train/ and test/."
        )
    classes = class_folders(root / "train", name)
    if len(classes) < 2:
        why = f"{root / 'train'} holds one class ({classes[0]})"
        raise declared_error(name, why, "A classifier needs 2 or more.")
    counts = {}
    for split in SPLITS:
        if split != "val" or (root / "val").exists():
            counts[split] = len(split_listing(root / split, classes, name)[0])
    first = root / "train" / classes[0] / image_names(root / "train" / classes[0])[0]
    mode, (width, height) = image_header(first, name)
    return FolderScan(classes, counts, 1 if mode in GRAY_MODES else 3, min(width, height))


def image_header(path: Path, name: str) -> tuple[str, tuple[int, int]]:
    """PIL's mode and (width, height) of an image file, reading its header only."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except READ_ERRORS as exc:
        raise unreadable(path, exc, name) from None


def unreadable(path: Path, exc: BaseException | str, name: str) -> Exception:
    why = exc if isinstance(exc, str) else _describe(exc)
    return declared_error(name, f"cannot read image {path} ({why})", "Replace or delete the file.")


def read_image(path: Path, channels: int, size: int, name: str) -> torch.Tensor:
    """One image file as uint8 (channels, size, size): decoded by PIL, converted to grayscale
    or RGB, then its square view."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except READ_ERRORS as exc:
        raise unreadable(path, exc, name) from None
    tensor = torch.from_numpy(pixels.reshape(*pixels.shape[:2], channels).copy())
    return square_view(tensor.permute(2, 0, 1), size)


def read_split(folder: Path, files: list[str], channels: int, size: int, name: str) -> torch.Tensor:
    """The images ``folder/<files>`` as uint8 (N, channels, size, size), read in threads."""
    out = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = pool.map(lambda f: read_image(folder / f, channels, size, name), files)
        for i, image in enumerate(images):
            out[i] = image
    return out


@dataclass(frozen=True)
class ImageFolder:
    """How to load one declared image folder (the spec's ``load``)."""

    name: str
    root: Path
    classes: tuple[str, ...]
    channels: int
    size: int
    stream: bool

    def __call__(self, request: DataRequest) -> ImageData:
        """Train, validation and test splits (in memory, or as files to stream) with the
        normalisation of the training split."""
        listed = {
            split: split_listing(self.root / split, self.classes, self.name)
            for split in SPLITS
            if split != "val" or (self.root / "val").exists()
        }
        if self.stream:
            return self.files(listed, request)
        return self.memory(listed, request)

    def splits(self, listed: dict, request: DataRequest) -> tuple[dict, np.ndarray, np.ndarray]:
        """Each split's (files, labels), train and val carved by :func:`holdout_split` when
        no val/ folder exists, and the train and val indices."""
        train_files, train_labels = listed["train"]
        if "val" in listed:
            n_val = len(listed["val"][0])
            return listed, np.arange(len(train_files)), np.arange(n_val)
        labels = np.asarray(train_labels)
        train_idx, val_idx = holdout_split(labels, request.split_seed, self.name)
        out = dict(listed)
        out["train"] = ([train_files[i] for i in train_idx], labels[train_idx].tolist())
        out["val"] = ([train_files[i] for i in val_idx], labels[val_idx].tolist())
        return out, train_idx, val_idx

    def folder(self, split: str, listed: dict) -> Path:
        """Where a split's files lie: validation images come from train/ without a val/."""
        return self.root / ("train" if split == "val" and "val" not in listed else split)

    def memory(self, listed: dict, request: DataRequest) -> ImageData:
        chosen, train_idx, val_idx = self.splits(listed, request)
        split = {
            key: Split(
                read_split(self.folder(key, listed), files, self.channels, self.size, self.name),
                torch.as_tensor(labels, dtype=torch.int64),
            )
            for key, (files, labels) in chosen.items()
        }
        stats = channel_statistics(split["train"].images)
        return self.data(split, train_idx, val_idx, stats)

    def files(self, listed: dict, request: DataRequest) -> ImageData:
        chosen, train_idx, val_idx = self.splits(listed, request)
        split = {
            key: FileSplit(self.folder(key, listed), np.array(files, dtype=np.bytes_), labels)
            for key, (files, labels) in chosen.items()
        }
        stats = sample_statistics(split["train"], stream_transform(self.size), request.split_seed)
        return self.data(split, train_idx, val_idx, stats)

    def data(
        self, split: dict, train_idx: np.ndarray, val_idx: np.ndarray, stats: Normalisation
    ) -> ImageData:
        """The loaded splits as :class:`ImageData`."""
        classes = list(self.classes)
        return ImageData(
            split["train"], split["val"], split["test"], train_idx, val_idx, classes, stats
        )
