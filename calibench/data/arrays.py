"""Arrays declared in the settings: ``format = "npz"`` (docs/protocol.md, "Your own data").

One NumPy ``.npz`` file holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``x_val``, ``y_val`` (else a seeded stratified split of train, :mod:`calibench.data.own`):

- images uint8, (N, H, W) for one channel, (N, H, W, C) or (N, C, H, W) with C in {1, 3}
  (channels last when the last axis has 1 or 3 entries), the same (C, H, W) in every split;
- labels integers 0..K-1, one per image, every class present in ``y_train``; K >= 2.

Images are stored at their square view (:func:`~calibench.data.own.square_view`), which leaves
square ``image_size`` images as they are. Arrays are always held in memory.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calibench.data.base import DataRequest, ImageData, Split
from calibench.data.files import READ_ERRORS, _describe
from calibench.data.own import channel_statistics, declared_error, holdout_split, square_view

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val")
HOW = "Save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."


def read_npz(path: Path, name: str) -> dict[str, np.ndarray]:
    """Every array of the file, loaded without pickles; a missing or unreadable file, or absent
    required arrays, are one clear error."""
    if not path.is_file():
        raise declared_error(name, f"{path} is not a file", "Set path to the .npz file.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (*READ_ERRORS, zipfile.BadZipFile) as exc:
        raise declared_error(name, f"cannot read {path} ({_describe(exc)})", HOW) from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing or (("x_val" in arrays) != ("y_val" in arrays)):
        missing += [k for k in OPTIONAL if k not in arrays and any(o in arrays for o in OPTIONAL)]
        raise declared_error(
            name,
            f"{path} lacks {', '.join(missing)} (it holds {', '.join(arrays) or 'nothing'})",
            HOW,
        )
    return arrays


def as_nchw(x: np.ndarray, key: str, name: str) -> np.ndarray:
    """uint8 images as (N, C, H, W): see the module docstring for the accepted layouts."""
    if x.dtype != np.uint8:
        raise declared_error(
            name,
            f"{key} is {x.dtype}, not uint8",
            "Store pixels as uint8 0..255, e.g. (x * 255).round().astype(np.uint8).",
        )
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise declared_error(
        name,
        f"{key} has shape {x.shape}",
        "Images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3.",
    )


def labels_of(y: np.ndarray, n: int, key: str, name: str) -> np.ndarray:
    """Integer labels (N,) as int64, one per image."""
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != n:
        raise declared_error(
            name,
            f"{key} is {y.dtype} {y.shape}",
            f"Labels must be a 1-D integer array with one entry per image ({n}).",
        )
    return y.astype(np.int64)


@dataclass(frozen=True)
class ArrayShape:
    """What registration needs: classes, channels and the images' shorter side."""

    num_classes: int
    channels: int
    size: int


def check_arrays(arrays: dict[str, np.ndarray], name: str) -> ArrayShape:
    """Shapes, dtypes and labels of every split checked against each other."""
    shapes = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x = as_nchw(arrays[f"x_{split}"], f"x_{split}", name)
        labels_of(arrays[f"y_{split}"], len(x), f"y_{split}", name)
        shapes[split] = x.shape[1:]
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"x_{s} {shape}" for s, shape in shapes.items())
        raise declared_error(name, f"the splits' images differ ({listed})", "Make them match.")
    y = arrays["y_train"]
    k = int(y.max()) + 1 if len(y) else 0
    if len(y) == 0 or y.min() < 0 or k < 2:
        raise declared_error(
            name, f"y_train holds {len(np.unique(y))} class(es)", "A classifier needs 2 or more."
        )
    absent = sorted(set(range(k)) - set(np.unique(y).tolist()))
    if absent:
        raise declared_error(
            name,
            f"classes {absent[:5]} have no training image (labels run 0..{k - 1})",
            "Labels must be 0..K-1 with every class in y_train.",
        )
    for split in ("val", "test"):
        other = arrays.get(f"y_{split}")
        if other is not None and len(other) and (other.min() < 0 or other.max() >= k):
            raise declared_error(
                name,
                f"the classes differ between splits: y_{split} has labels outside 0..{k - 1}",
                "Every label must be a class of y_train.",
            )
    c, h, w = shapes["train"]
    return ArrayShape(k, c, min(h, w))


def to_split(x: np.ndarray, y: np.ndarray, size: int, key: str, name: str) -> Split:
    """One split at ``size`` x ``size`` (square views of non-square or other-sized images)."""
    images = torch.from_numpy(np.ascontiguousarray(as_nchw(x, key, name)))
    if images.shape[-2:] != (size, size):
        images = torch.stack([square_view(image, size) for image in images])
    return Split(images, torch.from_numpy(labels_of(y, len(images), f"y{key[1:]}", name)))


@dataclass(frozen=True)
class ArrayFile:
    """How to load one declared ``.npz`` file (the spec's ``load``)."""

    name: str
    path: Path
    size: int

    def __call__(self, request: DataRequest) -> ImageData:
        """Train, validation and test splits in memory, with the training split's
        normalisation."""
        arrays = read_npz(self.path, self.name)
        check_arrays(arrays, self.name)
        full = to_split(arrays["x_train"], arrays["y_train"], self.size, "x_train", self.name)
        test = to_split(arrays["x_test"], arrays["y_test"], self.size, "x_test", self.name)
        if "x_val" in arrays:
            val = to_split(arrays["x_val"], arrays["y_val"], self.size, "x_val", self.name)
            train, train_idx, val_idx = full, np.arange(len(full)), np.arange(len(val))
        else:
            train_idx, val_idx = holdout_split(full.labels.numpy(), request.split_seed, self.name)
            train, val = full.subset(train_idx), full.subset(val_idx)
        k = int(arrays["y_train"].max()) + 1
        names = [str(c) for c in range(k)]
        stats = channel_statistics(train.images)
        return ImageData(train, val, test, train_idx, val_idx, names, stats)
