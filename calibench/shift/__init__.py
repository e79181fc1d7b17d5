"""Distribution shift: corrupted copies of a run's test set, official or generated.

The names ``--shift`` accepts (:data:`SHIFTS`):

- ``cifar10-c``, ``cifar100-c``, ``tiny_imagenet-c``, ``imagenet-c``: the released sets of
  Hendrycks and Dietterich (ICLR 2019), read from the data root, only for runs on their clean
  dataset;
- ``corrupt``: calibench's own corruptions of the run's clean test set, for any dataset held in
  memory, deterministic from a seed and named ``<dataset>-c-calibench`` (never an official set).

Each set is a sequence of (corruption, severity, split), produced one at a time so only one
split is in memory; the splits are of the clean test split's kind (uint8
:class:`~calibench.data.Split`, or for ImageNet-C a streamed :class:`~calibench.data.FileSplit`),
loaded with :func:`shift_dataset`'s spec. Layouts, tables and protocol: docs/shift.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from calibench.data.base import AnySplit, DatasetSpec, Split
from calibench.errors import CalibenchError
from calibench.registry import DATASETS
from calibench.shift.corruptions import corrupt_split, corruption_names
from calibench.shift.imagenet_c import imagenet_c_corruptions, imagenet_c_test_sets, no_resize
from calibench.shift.official import (
    EXTRA_CORRUPTIONS,
    OFFICIAL_SETS,
    SEVERITIES,
    cifar_c_corruptions,
    cifar_c_test_sets,
    tiny_imagenet_c_test_sets,
    tiny_imagenet_c_wnids,
)
from calibench.shift.official import STANDARD_CORRUPTIONS as OFFICIAL_CORRUPTIONS

GENERATED = "corrupt"
SHIFTS = (*OFFICIAL_SETS, GENERATED)
"""The ``--shift`` names: the official sets, then ``corrupt`` (generated for the run's dataset)."""

__all__ = [
    "GENERATED",
    "OFFICIAL_CORRUPTIONS",
    "SEVERITIES",
    "SHIFTS",
    "check_shift",
    "known_corruptions",
    "shift_corruptions",
    "shift_dataset",
    "shift_set_name",
    "shifted_test_sets",
]


def shift_set_name(name: str, dataset: str) -> str:
    """The name a shifted set is reported under: the official name (``cifar10-c``), or
    ``<dataset>-c-calibench`` for calibench's generated corruptions."""
    _check_name(name)
    return f"{dataset}-c-calibench" if name == GENERATED else name


def check_shift(
    name: str, dataset: str, data_root: Path | None = None, only: Sequence[str] | None = None
) -> None:
    """Raise a :class:`CalibenchError` unless ``--shift name`` fits a run on ``dataset``.

    An official set needs its own clean dataset (same image shape and classes); calibench's
    generated corruptions need a dataset held in memory. ``only`` (``--corruptions``) must name
    corruptions of the set. With ``data_root``, an official set's files are also checked to be
    in place (headers only, no image is read): those of ``only`` when given, else the standard
    ones. So a run can fail before training rather than after.
    """
    _check_name(name)
    spec = DATASETS.get(dataset)
    if name == GENERATED:
        if spec.stream is not None:
            raise CalibenchError(
                f"--shift {GENERATED} corrupts the test images in memory, but {dataset!r} is "
                "streamed from files. Use its official corrupted set (--shift imagenet-c for "
                "imagenet)."
            )
    else:
        _check_official_dataset(name, spec)
    if only is not None:
        known = known_corruptions(name, dataset)
        unknown = sorted(set(only) - set(known))
        if unknown:
            raise CalibenchError(
                f"--corruptions {', '.join(unknown)}: not in {shift_set_name(name, dataset)}. "
                f"Valid: {', '.join(known)}."
            )
    if data_root is not None:
        shift_corruptions(name, dataset, data_root, only)


def _check_official_dataset(name: str, spec: DatasetSpec) -> None:
    official = OFFICIAL_SETS[name]
    if spec.name == official.dataset:
        return
    c, h, w = official.image_shape
    theirs = f"{spec.in_channels}x{spec.image_size}x{spec.image_size}, {spec.num_classes}"
    raise CalibenchError(
        f"--shift {name} holds corrupted {official.dataset} test images ({c}x{h}x{w}, "
        f"{official.num_classes} classes), which cannot test a model trained on {spec.name!r} "
        f"({theirs} classes, not {official.dataset}'s). Use --shift {name} with the "
        f"dataset {official.dataset}, or --shift {GENERATED} for calibench's generated "
        f"corruptions of {spec.name}."
    )


def known_corruptions(name: str, dataset: str) -> tuple[str, ...]:
    """Every corruption shift ``name`` can hold for a run on ``dataset`` (files aside)."""
    _check_name(name)
    if name == GENERATED:
        return corruption_names(DATASETS.get(dataset).in_channels)
    if OFFICIAL_SETS[name].dataset == "tiny_imagenet":
        return OFFICIAL_CORRUPTIONS
    return OFFICIAL_CORRUPTIONS + EXTRA_CORRUPTIONS


def shift_corruptions(
    name: str, dataset: str, data_root: Path, only: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The corruptions :func:`shifted_test_sets` will yield, in order (each at
    :data:`SEVERITIES`): those of ``only`` when given; checks that an official set's files for
    them are in place."""
    _check_name(name)
    if name == GENERATED:
        names = corruption_names(DATASETS.get(dataset).in_channels)
        return tuple(c for c in names if only is None or c in only)
    official = OFFICIAL_SETS[name]
    root = Path(data_root)
    if official.dataset == "tiny_imagenet":
        chosen = tuple(c for c in OFFICIAL_CORRUPTIONS if only is None or c in only)
        tiny_imagenet_c_wnids(official, root, chosen)
        return chosen
    if official.dataset == "imagenet":
        return imagenet_c_corruptions(root, only)
    return cifar_c_corruptions(official, root, only)


def shift_dataset(name: str, spec: DatasetSpec) -> DatasetSpec:
    """The spec to load the splits of shift ``name`` with, for a run on ``spec``: ``spec``
    itself, except for ImageNet-C, whose pre-cropped images are not resized
    (:func:`calibench.shift.imagenet_c.no_resize`)."""
    _check_name(name)
    if name != GENERATED and OFFICIAL_SETS[name].dataset == "imagenet":
        return no_resize(spec)
    return spec


def shifted_test_sets(
    name: str,
    dataset_name: str,
    clean_test: AnySplit,
    data_root: Path,
    seed: int,
    only: Sequence[str] | None = None,
) -> Iterator[tuple[str, int, AnySplit]]:
    """Yield ``(corruption, severity, split)`` of shift ``name`` for a run on ``dataset_name``.

    Corruptions in :func:`shift_corruptions` order, severities 1..5 within each; one split is
    built per step. Official sets are read from ``data_root`` (``seed`` unused) and checked
    against ``clean_test`` (image shape, images per class at every severity); ``corrupt``
    corrupts ``clean_test`` itself with generators seeded from ``seed``, the corruption and the
    severity. ``only`` restricts the corruptions to those named, and then only their files need
    to exist. Errors in names, files or shapes are raised here, before the first split.
    """
    check_shift(name, dataset_name, only=only)
    root = Path(data_root)
    if name == GENERATED:
        if not isinstance(clean_test, Split):
            raise CalibenchError(f"--shift {GENERATED} needs a test split held in memory.")
        names = corruption_names(clean_test.images.shape[1])
        return _generated(clean_test, tuple(c for c in names if only is None or c in only), seed)
    official = OFFICIAL_SETS[name]
    if official.dataset == "imagenet":
        return imagenet_c_test_sets(root, clean_test, only)
    if not isinstance(clean_test, Split):
        raise CalibenchError(f"--shift {name} needs {official.dataset}'s test split in memory.")
    if official.dataset == "tiny_imagenet":
        return tiny_imagenet_c_test_sets(official, root, clean_test, only)
    return cifar_c_test_sets(official, root, clean_test, only)


def _generated(
    clean_test: Split, corruptions: tuple[str, ...], seed: int
) -> Iterator[tuple[str, int, Split]]:
    for corruption in corruptions:
        for severity in SEVERITIES:
            yield corruption, severity, corrupt_split(clean_test, corruption, severity, seed)


def _check_name(name: str) -> None:
    if name not in SHIFTS:
        raise CalibenchError(f"unknown shift {name!r}. Valid shifts: {', '.join(SHIFTS)}.")
