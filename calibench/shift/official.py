"""The official corrupted test sets of Hendrycks and Dietterich (ICLR 2019), read from disk.

Layouts (docs/shift.md), under the data root:

- ``CIFAR-10-C/`` and ``CIFAR-100-C/``: ``labels.npy`` and one ``<corruption>.npy`` per
  corruption, uint8 (5 n, 32, 32, 3) with rows ``[(s - 1) n, s n)`` at severity s = 1..5
  (n = 10,000 for the real files); read through memory maps, one severity at a time.
- ``Tiny-ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG`` (64x64); the class of a wnid is its
  line in Tiny-ImageNet's ``tiny-imagenet-200/wnids.txt``, as for the clean set.
- ``ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG`` (224x224), streamed: see
  :mod:`calibench.shift.imagenet_c`.

The 15 standard corruptions are required, unless the corruptions to evaluate are named
(``--corruptions``): then only those must be there. CIFAR's 4 extra ones are read when present.
Files are never downloaded: every error says where to put which files and which Zenodo record
holds them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calibench.data import tiny_imagenet
from calibench.data.base import AnySplit, Split
from calibench.data.files import READ_ERRORS, _describe
from calibench.errors import CalibenchError

SEVERITIES = (1, 2, 3, 4, 5)

STANDARD_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


@dataclass(frozen=True)
class OfficialSet:
    """One released corrupted test set: its ``--shift`` name, clean dataset, folder and source."""

    name: str
    dataset: str
    folder: str
    archive: str
    record: str
    image_shape: tuple[int, int, int]
    num_classes: int
    unpack_inside: bool = False
    """The archives unpack into the set's folder (one archive per corruption family)."""

    def how_to_get(self, root: Path) -> str:
        """Where the files come from and where they go."""
        where = (
            f"unpack them into {Path(root) / self.folder}/ so that every <corruption>/ folder "
            "lies directly in it"
            if self.unpack_inside
            else f"unpack it into {root}, which creates {self.folder}/"
        )
        return (
            f"download {self.archive} from the official Zenodo record {self.record} (Hendrycks "
            f"and Dietterich, ICLR 2019) and {where} (calibench never downloads it)"
        )


OFFICIAL_SETS = {
    s.name: s
    for s in (
        OfficialSet(
            "cifar10-c",
            "cifar10",
            "CIFAR-10-C",
            "CIFAR-10-C.tar",
            "https://zenodo.org/records/2535967",
            (3, 32, 32),
            10,
        ),
        OfficialSet(
            "cifar100-c",
            "cifar100",
            "CIFAR-100-C",
            "CIFAR-100-C.tar",
            "https://zenodo.org/records/3555552",
            (3, 32, 32),
            100,
        ),
        OfficialSet(
            "tiny_imagenet-c",
            "tiny_imagenet",
            "Tiny-ImageNet-C",
            "Tiny-ImageNet-C.tar",
            "https://zenodo.org/records/2536630",
            (3, 64, 64),
            200,
        ),
        OfficialSet(
            "imagenet-c",
            "imagenet",
            "ImageNet-C",
            "noise.tar, blur.tar, weather.tar and digital.tar (extra.tar for the 4 extra ones)",
            "https://zenodo.org/records/2235448",
            (3, 224, 224),
            1000,
            unpack_inside=True,
        ),
    )
}


def missing_error(
    official: OfficialSet, folder: Path, missing: Sequence[str], root: Path
) -> CalibenchError:
    """The error for absent files or folders of an official set."""
    listed = list(missing[:8]) + ([f"and {len(missing) - 8} more"] if len(missing) > 8 else [])
    if folder.is_dir():
        what = f"{official.folder} incomplete: {', '.join(listed)} missing in {folder}"
    else:
        what = f"{official.folder} not found: no folder {folder}"
    return CalibenchError(
        f"{what}. To evaluate under --shift {official.name}, {official.how_to_get(root)}."
    )


def corrupt_error(official: OfficialSet, path: Path, why: str, root: Path) -> CalibenchError:
    """The error for a file of an official set that exists but is damaged or not the release."""
    return CalibenchError(
        f"{official.folder}: cannot use {path}: {why}. The file is corrupt, truncated or not from "
        f"the release; delete it and {official.how_to_get(root)}."
    )


def mismatch_error(official: OfficialSet, where: Path, why: str, root: Path) -> CalibenchError:
    """The error for a well-formed set that does not fit the run's clean test set."""
    return CalibenchError(
        f"{official.folder} under {where} does not match the clean {official.dataset} test set: "
        f"{why}. Check that the folder holds the release as published (to get it, "
        f"{official.how_to_get(root)})."
    )


# ----------------------------------------------------------------------------------- CIFAR-C


def selected(only: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...] | None:
    """The corruptions of ``only`` in the order of ``known`` (None when ``only`` is None)."""
    return None if only is None else tuple(c for c in known if c in only)


def cifar_c_corruptions(
    official: OfficialSet, root: Path, only: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The corruptions to read from a CIFAR-C folder: ``only`` (each of them required), else the
    15 standard ones (required) and then the extra ones found.

    Raises the missing-files error unless ``labels.npy`` and every required file are present.
    """
    folder = Path(root) / official.folder
    chosen = selected(only, STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS)
    required = ["labels.npy", *(f"{c}.npy" for c in chosen or STANDARD_CORRUPTIONS)]
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise missing_error(official, folder, missing, root)
    if chosen is not None:
        return chosen
    extra = tuple(c for c in EXTRA_CORRUPTIONS if (folder / f"{c}.npy").is_file())
    return STANDARD_CORRUPTIONS + extra


def read_cifar_c_labels(official: OfficialSet, root: Path) -> np.ndarray:
    """``labels.npy`` as int64, checked: one integer label per row, 5 equal severity blocks."""
    path = Path(root) / official.folder / "labels.npy"
    labels = _load_npy(official, path, root, mmap=False)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
        why = f"expected a 1-D integer array, found {labels.dtype} {labels.shape}"
        raise corrupt_error(official, path, why, root)
    if len(labels) % len(SEVERITIES):
        why = f"{len(labels)} labels do not split into {len(SEVERITIES)} severities"
        raise corrupt_error(official, path, why, root)
    if labels.min() < 0 or labels.max() >= official.num_classes:
        why = f"labels range {labels.min()}..{labels.max()}, expected 0..{official.num_classes - 1}"
        raise corrupt_error(official, path, why, root)
    return labels.astype(np.int64)


def open_cifar_c(official: OfficialSet, root: Path, corruption: str, rows: int) -> np.ndarray:
    """A read-only memory map of ``<corruption>.npy``, checked to be uint8 (rows, 32, 32, 3)."""
    path = Path(root) / official.folder / f"{corruption}.npy"
    images = _load_npy(official, path, root, mmap=True)
    c, h, w = official.image_shape
    if images.dtype != np.uint8 or images.shape != (rows, h, w, c):
        expected = (rows, h, w, c)
        why = f"expected uint8 {expected} to match labels.npy, found {images.dtype} {images.shape}"
        raise corrupt_error(official, path, why, root)
    return images


def cifar_c_test_sets(
    official: OfficialSet, root: Path, clean_test: Split, only: Sequence[str] | None = None
) -> Iterator[tuple[str, int, Split]]:
    """Check a CIFAR-C folder against the clean test set, then yield (corruption, severity,
    split) one at a time, corruptions in file order (those of ``only``), severities 1..5."""
    root = Path(root)
    corruptions = cifar_c_corruptions(official, root, only)
    labels = read_cifar_c_labels(official, root)
    n = len(labels) // len(SEVERITIES)
    check_shape(official, root / official.folder, root, clean_test)
    for severity in SEVERITIES:
        block = labels[(severity - 1) * n : severity * n]
        where = root / official.folder / "labels.npy"
        check_block(official, where, root, block, clean_test, severity)
    for corruption in corruptions:
        open_cifar_c(official, root, corruption, len(labels))
    return _iterate_cifar_c(official, root, corruptions, labels, n)


def _iterate_cifar_c(
    official: OfficialSet, root: Path, corruptions: Sequence[str], labels: np.ndarray, n: int
) -> Iterator[tuple[str, int, Split]]:
    for corruption in corruptions:
        images = open_cifar_c(official, root, corruption, len(labels))
        for severity in SEVERITIES:
            rows = slice((severity - 1) * n, severity * n)
            try:
                block = np.array(images[rows])
            except READ_ERRORS as exc:
                path = root / official.folder / f"{corruption}.npy"
                raise corrupt_error(official, path, _describe(exc), root) from exc
            pixels = torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()
            yield corruption, severity, Split(pixels, torch.from_numpy(labels[rows]))


def _load_npy(official: OfficialSet, path: Path, root: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except READ_ERRORS as exc:
        raise corrupt_error(official, path, _describe(exc), root) from exc


# ---------------------------------------------------------------------------- Tiny-ImageNet-C


def tiny_imagenet_c_wnids(
    official: OfficialSet, root: Path, corruptions: Sequence[str] = STANDARD_CORRUPTIONS
) -> list[str]:
    """Tiny-ImageNet's wnids (class order), after checking each of ``corruptions`` has all
    five severity folders, each with one folder per wnid."""
    root = Path(root)
    folder = root / official.folder
    missing = [
        f"{c}/{s}/" for c in corruptions for s in SEVERITIES if not (folder / c / str(s)).is_dir()
    ]
    if missing:
        raise missing_error(official, folder, missing, root)
    wnids_path = root / tiny_imagenet.FOLDER / "wnids.txt"
    clean_how = (
        f"its labels come from Tiny-ImageNet's {tiny_imagenet.FOLDER}/wnids.txt: fetch "
        f"{tiny_imagenet.URL} and unzip it into {root}"
    )
    if not wnids_path.is_file():
        raise CalibenchError(
            f"{official.folder} needs {wnids_path}, which is missing: {clean_how}, or run "
            "with --download to fetch the clean Tiny-ImageNet."
        )
    wnids = tiny_imagenet.read_wnids(wnids_path, clean_how)
    for c in corruptions:
        for s in SEVERITIES:
            where = folder / c / str(s)
            found = {p.name for p in where.iterdir() if p.is_dir()}
            absent = [w for w in wnids if w not in found]
            if absent:
                raise missing_error(official, where, [f"{w}/" for w in absent], root)
            unknown = sorted(found - set(wnids))
            if unknown:
                why = f"class folders {', '.join(unknown[:5])} are not in {wnids_path}"
                raise mismatch_error(official, where, why, root)
    return wnids


def tiny_imagenet_c_test_sets(
    official: OfficialSet, root: Path, clean_test: Split, only: Sequence[str] | None = None
) -> Iterator[tuple[str, int, Split]]:
    """Check the Tiny-ImageNet-C tree (the corruptions of ``only``, else the 15 standard ones),
    then yield (corruption, severity, split) one at a time; images in wnids.txt class order,
    file-name order within a class."""
    root = Path(root)
    corruptions = selected(only, STANDARD_CORRUPTIONS) or STANDARD_CORRUPTIONS
    wnids = tiny_imagenet_c_wnids(official, root, corruptions)
    check_shape(official, root / official.folder, root, clean_test)
    return _iterate_tiny_imagenet_c(official, root, wnids, clean_test, corruptions)


def _iterate_tiny_imagenet_c(
    official: OfficialSet,
    root: Path,
    wnids: list[str],
    clean_test: Split,
    corruptions: Sequence[str],
) -> Iterator[tuple[str, int, Split]]:
    how = official.how_to_get(root)

    def unreadable(path: Path, reason: BaseException | str) -> CalibenchError:
        why = reason if isinstance(reason, str) else _describe(reason)
        return corrupt_error(official, path, why, root)

    for corruption in corruptions:
        for severity in SEVERITIES:
            where = root / official.folder / corruption / str(severity)
            paths: list[Path] = []
            labels: list[int] = []
            for k, wnid in enumerate(wnids):
                found = sorted(
                    p
                    for p in (where / wnid).iterdir()
                    if p.suffix.lower() in tiny_imagenet.IMAGE_SUFFIXES
                )
                paths.extend(found)
                labels.extend([k] * len(found))
            label_array = np.asarray(labels, dtype=np.int64)
            check_block(official, where, root, label_array, clean_test, severity)
            images = tiny_imagenet.read_images(paths, how, unreadable=unreadable)
            yield corruption, severity, Split(images, torch.from_numpy(label_array))


# ------------------------------------------------------------------------------------ shared


def check_shape(official: OfficialSet, where: Path, root: Path, clean_test: Split) -> None:
    """The clean test images must have the official set's shape."""
    shape = tuple(clean_test.images.shape[1:])
    if shape != official.image_shape:
        why = f"its images are {official.image_shape}, the test set's {shape}"
        raise mismatch_error(official, where, why, root)


def check_block(
    official: OfficialSet,
    where: Path,
    root: Path,
    labels: np.ndarray,
    clean_test: AnySplit,
    severity: int,
) -> None:
    """One severity's labels must match the clean test set's size and images per class."""
    if len(labels) != len(clean_test):
        why = f"{len(labels)} images at severity {severity}, {len(clean_test)} in the test set"
        raise mismatch_error(official, where, why, root)
    expected = np.bincount(clean_test.labels.cpu().numpy(), minlength=official.num_classes)
    counts = np.bincount(labels, minlength=official.num_classes)
    if not np.array_equal(counts, expected):
        k = int(np.flatnonzero(counts != expected)[0])
        why = (
            f"class {k} has {counts[k]} images at severity {severity}, "
            f"{expected[k]} in the clean test set"
        )
        raise mismatch_error(official, where, why, root)
