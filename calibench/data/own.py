"""What the datasets declared in the settings share (docs/protocol.md, "Your own data"): the
validation split when none is given, the normalisation statistics of the training split, the
square view every in-memory image is stored at, and the one form of their errors.

- Validation split: a seeded stratified split of the training images (scikit-learn's
  ``train_test_split`` with ``stratify``), :func:`~calibench.data.files.holdout_size` images (10%,
  at most 5,000), at least one per class.
- Normalisation: per channel, the mean and the standard deviation over every pixel of every
  training-split image (the way CIFAR-10's (0.4914, ...) / (0.2470, ...) are computed), in [0, 1]
  units; a constant channel gets std 1. Streamed sets use a seeded sample of
  :data:`STATISTICS_SAMPLE` training images.
- Square view: the shorter side resized to ``image_size`` (bilinear, antialiased), then the
  central ``image_size`` square, as the evaluation view of the streamed datasets.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from calibench.data.base import FileSplit, Normalisation, StreamTransform
from calibench.data.files import holdout_size
from calibench.data.stream import FileImages, eval_view
from calibench.errors import CalibenchError

STATISTICS_SAMPLE = 2000
"""Training images whose evaluation views give a streamed dataset's normalisation."""
CHUNK = 1024


def declared_error(name: str, what: str, fix: str) -> CalibenchError:
    """The one form of every problem of a declared dataset: where, what, and what to do."""
    return CalibenchError(f"[datasets.{name}]: {what}. {fix}")


def holdout_split(labels: np.ndarray, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices of a seeded stratified split with
    :func:`~calibench.data.files.holdout_size` validation images (at least one per class)."""
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        k = int(classes[counts.argmin()])
        raise declared_error(
            name,
            f"class {k} has {int(counts.min())} training image, and no val/ split is given",
            "Every class needs at least 2 training images to hold one out for validation "
            "(or give a val/ folder, or x_val/y_val arrays).",
        )
    n_val = max(holdout_size(len(labels)), len(classes))
    if len(labels) - n_val < len(classes):
        raise declared_error(
            name,
            f"{len(labels)} training images are too few to hold out {n_val} for validation",
            "Add training images, or give a validation split (val/ folder, x_val/y_val).",
        )
    train, val = train_test_split(
        np.arange(len(labels)), test_size=n_val, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(val)


def channel_statistics(images: torch.Tensor) -> Normalisation:
    """Per-channel mean and standard deviation over all pixels of uint8 (N, C, H, W) images,
    in [0, 1] units (float64 sums over chunks of :data:`CHUNK` images)."""
    return chunk_statistics(images[i : i + CHUNK] for i in range(0, len(images), CHUNK))


def chunk_statistics(chunks: Iterable[torch.Tensor]) -> Normalisation:
    """:func:`channel_statistics` of the images of all ``chunks`` together."""
    total = squares = None
    count = 0
    for chunk in chunks:
        x = chunk.to(torch.float64) / 255
        sums, sums2 = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        squares = sums2 if squares is None else squares + sums2
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if total is None or squares is None:
        raise ValueError("no images to compute statistics of")
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return Normalisation(tuple(mean.tolist()), tuple(std.tolist()))


def sample_statistics(split: FileSplit, transform: StreamTransform, seed: int) -> Normalisation:
    """:func:`channel_statistics` of the evaluation views of a seeded sample of
    :data:`STATISTICS_SAMPLE` images of a streamed split."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(split))[:STATISTICS_SAMPLE])
    images = FileImages(split, transform, train=False, hflip=False, decode=True)
    chunks = (
        torch.stack([images[(int(i), 0)] for i in chosen[start : start + CHUNK // 4]])
        for start in range(0, len(chosen), CHUNK // 4)
    )
    return chunk_statistics(chunks)


def square_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 (C, H, W) image as a ``size`` x ``size`` square: shorter side resized to
    ``size``, then the central square."""
    return eval_view(image, StreamTransform(crop_size=size, resize_size=size))


def stream_transform(size: int) -> StreamTransform:
    """The views of a streamed declared dataset: random resized crops to ``size`` for
    training; for evaluation the shorter side resized to ``size`` x 256/224 (ImageNet's ratio,
    rounded) and the central ``size`` crop."""
    return StreamTransform(crop_size=size, resize_size=max(size, round(size * 256 / 224)))


def unset_statistics(channels: int) -> tuple[float, ...]:
    """The spec's mean/std placeholder: NaN, as the statistics come from the training split."""
    return (float("nan"),) * channels
