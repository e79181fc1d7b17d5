"""Distribution shift: corrupted copies of a run's test set, official or generated.

The names ``--shift`` accepts (:data:`SHIFTS`):

- ``cifar10-c``, ``cifar100-c``, ``tiny_imagenet-c``: the released sets of Hendrycks and
  Dietterich (ICLR 2019), read from the data root, only for runs on their clean dataset;
- ``corrupt``: calibench's own corruptions of the run's clean test set, for any dataset,
  deterministic from a seed and named ``<dataset>-c-calibench`` (never an official set).

Each set is a sequence of (corruption, severity, :class:`~calibench.data.Split`), produced one
at a time so only one split is in memory; the splits are uint8 like the clean test split, so
the same loader normalises them. Layouts, tables and protocol: docs/shift.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from calibench.data.base import Split
from calibench.errors import CalibenchError
from calibench.registry import DATASETS
from calibench.shift.corruptions import corrupt_split, corruption_names
from calibench.shift.official import (
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
    "shift_corruptions",
    "shift_set_name",
    "shifted_test_sets",
]


def shift_set_name(name: str, dataset: str) -> str:
    """The name a shifted set is reported under: the official name (``cifar10-c``), or
    ``<dataset>-c-calibench`` for calibench's generated corruptions."""
    _check_name(name)
    return f"{dataset}-c-calibench" if name == GENERATED else name


def check_shift(name: str, dataset: str, data_root: Path | None = None) -> None:
    """Raise a :class:`CalibenchError` unless ``--shift name`` fits a run on ``dataset``.

    An official set needs its own clean dataset (same image shape and classes); with
    ``data_root``, its files are also checked to be in place (headers only, no image is read),
    so a run can fail before training rather than after.
    """
    _check_name(name)
    spec = DATASETS.get(dataset)
    if name == GENERATED:
        return
    official = OFFICIAL_SETS[name]
    if dataset != official.dataset:
        c, h, w = official.image_shape
        theirs = f"{spec.in_channels}x{spec.image_size}x{spec.image_size}, {spec.num_classes}"
        raise CalibenchError(
            f"--shift {name} holds corrupted {official.dataset} test images ({c}x{h}x{w}, "
            f"{official.num_classes} classes), which cannot test a model trained on {dataset!r} "
            f"({theirs} classes, not {official.dataset}'s). Use --shift {name} with the "
            f"dataset {official.dataset}, or --shift {GENERATED} for calibench's generated "
            f"corruptions of {dataset}."
        )
    if data_root is not None:
        shift_corruptions(name, dataset, data_root)


def shift_corruptions(name: str, dataset: str, data_root: Path) -> tuple[str, ...]:
    """The corruptions :func:`shifted_test_sets` will yield, in order (each at
    :data:`SEVERITIES`); checks that an official set's files are in place."""
    _check_name(name)
    if name == GENERATED:
        return corruption_names(DATASETS.get(dataset).in_channels)
    official = OFFICIAL_SETS[name]
    if official.dataset == "tiny_imagenet":
        tiny_imagenet_c_wnids(official, Path(data_root))
        return OFFICIAL_CORRUPTIONS
    return cifar_c_corruptions(official, Path(data_root))


def shifted_test_sets(
    name: str,
    dataset_name: str,
    clean_test: Split,
    data_root: Path,
    seed: int,
    only: Sequence[str] | None = None,
) -> Iterator[tuple[str, int, Split]]:
    """Yield ``(corruption, severity, split)`` of shift ``name`` for a run on ``dataset_name``.

    Corruptions in :func:`shift_corruptions` order, severities 1..5 within each; one split is
    built per step. Official sets are read from ``data_root`` (``seed`` unused) and checked
    against ``clean_test`` (image shape, images per class at every severity); ``corrupt``
    corrupts ``clean_test`` itself with generators seeded from ``seed``, the corruption and the
    severity. ``only`` restricts the corruptions to those named. Errors in names, files or
    shapes are raised here, before the first split.
    """
    check_shift(name, dataset_name)
    if only is not None:
        available = shift_corruptions(name, dataset_name, data_root)
        unknown = sorted(set(only) - set(available))
        if unknown:
            raise CalibenchError(
                f"--corruptions {', '.join(unknown)}: not in {shift_set_name(name, dataset_name)}."
                f" Valid: {', '.join(available)}."
            )
    if name == GENERATED:
        names = corruption_names(clean_test.images.shape[1])
        return _generated(clean_test, tuple(c for c in names if only is None or c in only), seed)
    official = OFFICIAL_SETS[name]
    if official.dataset == "tiny_imagenet":
        sets = tiny_imagenet_c_test_sets(official, Path(data_root), clean_test)
    else:
        sets = cifar_c_test_sets(official, Path(data_root), clean_test)
    return (item for item in sets if only is None or item[0] in only)


def _generated(
    clean_test: Split, corruptions: tuple[str, ...], seed: int
) -> Iterator[tuple[str, int, Split]]:
    for corruption in corruptions:
        for severity in SEVERITIES:
            yield corruption, severity, corrupt_split(clean_test, corruption, severity, seed)


def _check_name(name: str) -> None:
    if name not in SHIFTS:
        raise CalibenchError(f"unknown shift {name!r}. Valid shifts: {', '.join(SHIFTS)}.")
