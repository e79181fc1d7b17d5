"""Tiny-ImageNet (200 classes, 64x64 RGB), read from the standard folder tree with PIL.

On disk, ``ROOT/tiny-imagenet-200/``: ``wnids.txt`` (one WordNet id per line, which fixes the
class order), ``words.txt`` (optional: names per id), ``train/<wnid>/images/*.JPEG`` (500 per
class) and ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (file, wnid, box). The
unlabelled ``test/`` folder is not used. Grayscale JPEGs are converted to RGB.

Split: 50 images per class held out of the training set, chosen with a seeded stratified split
(90k/10k); when a class has 50 images or fewer (small copies), ``max(1, smallest // 10)`` per
class. The official validation set (10k) is the TEST split.

Normalisation: ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
Augmentation: random crop with padding 4 and horizontal flips. ``download=True`` fetches and
unpacks the cs231n archive through torchvision's downloader.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from calibench.data.base import DataRequest, DatasetSpec, ImageData, Split, register_dataset
from calibench.data.files import (
    READ_ERRORS,
    corrupt_file_error,
    download_error,
    missing_dataset_error,
    stratified_holdout,
)
from calibench.errors import CalibenchError

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_SIZE = 64
IMAGE_SUFFIXES = (".jpeg", ".jpg")
REQUIRED = ("wnids.txt", "train/", "val/images/", "val/val_annotations.txt")


def load_tiny_imagenet(request: DataRequest) -> ImageData:
    """Load Tiny-ImageNet: train minus a seeded 50-per-class val set; official val as test."""
    root = Path(request.root)
    folder = root / FOLDER
    how = f"fetch {URL} on another machine and unzip it into {root} (it creates {FOLDER}/)"
    if request.download and _missing_layout(folder):
        download_tiny_imagenet(root)
    missing = _missing_layout(folder)
    if missing:
        raise missing_dataset_error("tiny_imagenet", folder, missing, how)
    wnids = read_wnids(folder / "wnids.txt", how)
    train_paths, train_labels = _train_listing(folder, wnids, how)
    test_paths, test_labels = _val_listing(folder, wnids, how)
    train = read_images(train_paths, how)
    test = Split(read_images(test_paths, how), torch.as_tensor(test_labels, dtype=torch.int64))
    return stratified_holdout(
        train,
        torch.as_tensor(train_labels, dtype=torch.int64),
        test,
        request,
        class_names(folder, wnids),
        "tiny_imagenet",
    )


def download_tiny_imagenet(root: Path) -> None:
    """Fetch the cs231n zip into ``root`` and unpack it there (needs a network)."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, download_root=str(root))
    except (*READ_ERRORS, zipfile.BadZipFile) as exc:
        how = f"fetch {URL} on another machine and unzip it into {root} (it creates {FOLDER}/)"
        raise download_error("tiny_imagenet", root, exc, how) from exc


def read_wnids(path: Path, how: str) -> list[str]:
    """The WordNet ids listed in ``wnids.txt``, in file order (= class index order)."""
    wnids = [line.strip() for line in _read_text(path, how).splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise corrupt_file_error("tiny_imagenet", path, "empty or with repeated ids", how)
    return wnids


def class_names(folder: Path, wnids: list[str]) -> list[str]:
    """A readable name per class: the first name ``words.txt`` gives the wnid, else the wnid."""
    words = folder / "words.txt"
    names: dict[str, str] = {}
    if words.is_file():
        for line in words.read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            names[wnid.strip()] = text.split(",")[0].strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def read_images(
    paths: list[Path],
    how: str,
    unreadable: Callable[[Path, BaseException | str], CalibenchError] | None = None,
) -> torch.Tensor:
    """Decode 64x64 images (in threads) into a uint8 (N, 3, 64, 64) tensor.

    ``unreadable(path, reason)`` builds the error for a file that is not a 64x64 image; by
    default Tiny-ImageNet's corrupt-file error with ``how``.
    """

    def fail(path: Path, reason: BaseException | str) -> CalibenchError:
        if unreadable is not None:
            return unreadable(path, reason)
        return corrupt_file_error("tiny_imagenet", path, reason, how)

    out = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, pixels in enumerate(pool.map(lambda p: _read_image(p, fail), paths)):
            out[i] = pixels
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _read_image(
    path: Path, fail: Callable[[Path, BaseException | str], CalibenchError]
) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except READ_ERRORS as exc:
        raise fail(path, exc) from exc
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        raise fail(path, f"{rgb.size[0]}x{rgb.size[1]} pixels, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return np.asarray(rgb)


def _read_text(path: Path, how: str) -> str:
    try:
        return path.read_text()
    except READ_ERRORS as exc:
        raise corrupt_file_error("tiny_imagenet", path, exc, how) from exc


def _missing_layout(folder: Path) -> list[str]:
    return [
        name
        for name in REQUIRED
        if not ((folder / name).is_dir() if name.endswith("/") else (folder / name).is_file())
    ]


def _train_listing(folder: Path, wnids: list[str], how: str) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        found = sorted(p for p in images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise missing_dataset_error("tiny_imagenet", images, ["the class's JPEG images"], how)
        paths.extend(found)
        labels.extend([k] * len(found))
    return paths, labels


def _val_listing(folder: Path, wnids: list[str], how: str) -> tuple[list[Path], list[int]]:
    annotations = folder / "val" / "val_annotations.txt"
    index = {wnid: k for k, wnid in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(_read_text(annotations, how).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in index:
            why = f"line {number} does not name an image and a wnid from wnids.txt: {line!r}"
            raise corrupt_file_error("tiny_imagenet", annotations, why, how)
        paths.append(folder / "val" / "images" / fields[0].strip())
        labels.append(index[fields[1].strip()])
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        listed = absent[:5] + ([f"and {len(absent) - 5} more"] if len(absent) > 5 else [])
        raise missing_dataset_error("tiny_imagenet", folder / "val" / "images", listed, how)
    if not paths:
        raise corrupt_file_error("tiny_imagenet", annotations, "no labelled images listed", how)
    return paths, labels


TINY_IMAGENET = register_dataset(
    DatasetSpec(
        name="tiny_imagenet",
        num_classes=200,
        in_channels=3,
        image_size=64,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        load=load_tiny_imagenet,
        crop_padding=4,
        hflip=True,
        description="Tiny-ImageNet, 90k train / 10k val / official 10k val as test, 64x64 RGB",
    )
)
