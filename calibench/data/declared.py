"""Datasets declared in the settings, no code: a ``[datasets.<name>]`` table with a ``format``
(docs/protocol.md, "Your own data"; the README's "Your own data").

.. code-block:: toml

    [datasets.colours]
    format = "imagefolder"     # or "npz" with path = "arrays.npz"
    root = "data/colours"      # relative to the settings file; train/<class>/*, test/<class>/*
    image_size = 32            # optional: default the first training image's shorter side
    backbone = "small_cnn"     # and any training setting, as for every dataset

:func:`register_from_settings` is what the settings layer calls for each such table: it checks
the data keys (:data:`DATA_KEYS`), lists the folder or reads the array shapes (no image is
decoded), and registers a :class:`~calibench.data.DatasetSpec` whose loader reads the data and
computes the normalisation of the training split.

Augmentation of in-memory sets: random crop with zero padding ``crop_padding`` (default
``image_size // 8``, CIFAR's 4 pixels at 32) and horizontal flips (``hflip``, default true); set
``crop_padding = 0`` and ``hflip = false`` for digits or text. Streamed sets: random resized
crops and flips (:func:`~calibench.data.own.stream_transform`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibench.data.arrays import ArrayFile, check_arrays, read_npz
from calibench.data.base import DatasetSpec, load_dataset
from calibench.data.folder import MEMORY_LIMIT, ImageFolder, scan_folder
from calibench.data.own import declared_error, stream_transform, unset_statistics
from calibench.registry import DATASETS
from calibench.settings import build_settings
from calibench.spec import DATA_KEYS, Declared

MAX_IMAGE_SIZE = 4096
SOURCE = "settings"
"""Registry source prefix of declared datasets (a new declaration of one replaces it)."""


_DECLARED: dict[str, tuple[dict[str, Any], str]] = {}
"""Every dataset this process declared: name -> (its table, the settings file)."""


def register_from_settings(
    name: str, table: dict[str, Any], settings_file: Path
) -> DatasetSpec | None:
    """Register the dataset a ``[datasets.<name>]`` table of ``settings_file`` declares (one
    with a ``format``); relative paths are taken from the file's folder. Returns its spec, or
    None for a table that declares no data (the training settings of a registered dataset,
    which may come from a plugin loaded later)."""
    if "format" not in table:
        return None
    settings_file = Path(settings_file).resolve()
    base = settings_file.parent
    where = f"[datasets.{name}]"
    if name in DATASETS and not DATASETS.source(name).startswith(SOURCE):
        raise declared_error(
            name, f"declares a format, but {name!r} is a built-in dataset", "Pick another name."
        )
    values = {k: v for k, v in table.items() if k in DATA_KEYS}
    declared = build_settings(Declared, values, where, noun="data setting")
    make = _folder_spec if declared.format == "imagefolder" else _array_spec
    spec = make(name, declared, base)
    DATASETS.unregister(name)
    load_dataset.cache_clear()
    _DECLARED[name] = (dict(table), str(settings_file))
    return DATASETS.add(name, spec, source=f"{SOURCE}: {settings_file} {where}")


def declarations() -> list[tuple[str, dict[str, Any], str]]:
    """``(name, table, settings file)`` of every dataset declared in this process, for
    :func:`redeclare` in a worker process (a spawned process starts with the built-in
    datasets and its plugins only); those unregistered since are left out."""
    return [
        (name, table, path)
        for name, (table, path) in _DECLARED.items()
        if name in DATASETS and DATASETS.source(name).startswith(SOURCE)
    ]


def redeclare(items: list[tuple[str, dict[str, Any], str]]) -> None:
    """Declare again the datasets :func:`declarations` listed in another process."""
    for name, table, path in items:
        register_from_settings(name, table, Path(path))


def _path(name: str, value: str | None, key: str, base: Path, example: str) -> Path:
    if not value:
        raise declared_error(name, f"has no {key}", f"Set {key} = {example!r}.")
    return (Path(base) / Path(value).expanduser()).resolve()


def _checked(name: str, declared: Declared) -> None:
    size, padding = declared.image_size, declared.crop_padding
    if size is not None and not 1 <= size <= MAX_IMAGE_SIZE:
        raise declared_error(name, f"image_size is {size}", f"Give 1..{MAX_IMAGE_SIZE} pixels.")
    if padding is not None and padding < 0:
        raise declared_error(name, f"crop_padding is {padding}", "Give 0 or more pixels.")


def _folder_spec(name: str, declared: Declared, base: Path) -> DatasetSpec:
    _checked(name, declared)
    if declared.path is not None:
        raise declared_error(name, "an imagefolder has a root, not a path", "Rename path to root.")
    root = _path(name, declared.root, "root", base, "data/my-images")
    scan = scan_folder(root, name)
    channels = declared.channels or scan.channels
    size = declared.image_size or scan.size
    pixels = sum(scan.counts.values()) * channels * size * size
    stream = pixels > MEMORY_LIMIT if declared.stream is None else declared.stream
    if stream and channels != 3:
        raise declared_error(
            name, "a streamed image folder is decoded as RGB", "Set channels = 3 or stream = false."
        )
    load = ImageFolder(name, root, tuple(scan.classes), channels, size, stream)
    return _spec(name, declared, len(scan.classes), channels, size, load, stream)


def _array_spec(name: str, declared: Declared, base: Path) -> DatasetSpec:
    _checked(name, declared)
    if declared.root is not None:
        raise declared_error(name, "an npz dataset has a path, not a root", "Rename root to path.")
    if declared.stream:
        raise declared_error(name, "npz arrays are always held in memory", "Remove stream.")
    path = _path(name, declared.path, "path", base, "data/my-arrays.npz")
    shape = check_arrays(read_npz(path, name), name)
    if declared.channels is not None and declared.channels != shape.channels:
        raise declared_error(
            name,
            f"channels = {declared.channels}, but the arrays have {shape.channels}",
            "Remove channels (it is read from the arrays).",
        )
    size = declared.image_size or shape.size
    load = ArrayFile(name, path, size)
    return _spec(name, declared, shape.num_classes, shape.channels, size, load, False)


def _spec(
    name: str, declared: Declared, classes: int, channels: int, size: int, load: Any, stream: bool
) -> DatasetSpec:
    padding = declared.crop_padding if declared.crop_padding is not None else size // 8
    kind = f"{declared.format}, {'streamed' if stream else 'in memory'}"
    return DatasetSpec(
        name=name,
        num_classes=classes,
        in_channels=channels,
        image_size=size,
        mean=unset_statistics(channels),
        std=unset_statistics(channels),
        load=load,
        crop_padding=0 if stream else padding,
        hflip=declared.hflip,
        description=declared.description or f"declared in the settings ({kind})",
        stream=stream_transform(size) if stream else None,
    )
