"""What every dataset family provides: a spec to register and the splits it loads, held in
memory (:class:`Split`) or listed as files to stream (:class:`FileSplit`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from calibench.registry import DATASETS


def default_data_root() -> Path:
    """``$CALIBENCH_DATA`` if set, else ``~/.cache/calibench/data``."""
    return Path(os.environ.get("CALIBENCH_DATA", "~/.cache/calibench/data")).expanduser()


@dataclass(frozen=True)
class DataRequest:
    """Where to read a dataset from and how to split it."""

    root: Path
    download: bool = False
    split_seed: int = 0


@dataclass
class Split:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be (N,) and match the images")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> Split:
        """The split restricted to ``indices`` (in that order)."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class StreamTransform:
    """How a streamed dataset's images become model inputs (sizes in pixels; definitions in
    :mod:`calibench.data.stream` and docs/imagenet.md, "Data")."""

    crop_size: int = 224
    resize_size: int = 256
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


@dataclass
class FileSplit:
    """One streamed split: image files under ``folder`` (names relative to it, stored as a bytes
    array so that forked workers share it without copying) and int64 labels (N,)."""

    folder: Path
    files: np.ndarray
    labels: torch.Tensor

    def __post_init__(self) -> None:
        self.files = np.asarray(self.files, dtype=np.bytes_)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.files.ndim != 1 or len(self.files) != len(self.labels):
            raise ValueError("files must be (N,) and match the labels")

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> str:
        return os.path.join(self.folder, self.files[index].decode())

    def subset(self, indices: np.ndarray) -> FileSplit:
        """The split restricted to ``indices`` (in that order)."""
        return FileSplit(self.folder, self.files[indices], self.labels[torch.as_tensor(indices)])


AnySplit = Split | FileSplit
"""A split of either kind: both have ``labels``, ``len()`` and ``subset()``."""


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and standard deviation in [0, 1] units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class ImageData:
    """A dataset's train / validation / test splits and the indices that made the split.

    ``train_indices`` and ``val_indices`` index the original training set, so the split a run
    used can be saved with it and checked later.
    """

    train: AnySplit
    val: AnySplit
    test: AnySplit
    train_indices: np.ndarray
    val_indices: np.ndarray
    class_names: list[str] = field(default_factory=list)
    normalisation: Normalisation | None = None
    """Statistics computed from this training split, for datasets whose spec states none
    (datasets declared in the settings); None: the spec's ``mean``/``std`` apply."""

    def split_record(self) -> dict[str, np.ndarray]:
        """What a run stores in ``split.npz``: the split indices and, when this data computed
        its own normalisation, its ``mean`` and ``std`` (what every evaluation of the run uses)."""
        record = {"train_indices": self.train_indices, "val_indices": self.val_indices}
        if self.normalisation is not None:
            record["mean"] = np.asarray(self.normalisation.mean, dtype=np.float64)
            record["std"] = np.asarray(self.normalisation.std, dtype=np.float64)
        return record


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its shape, normalisation, augmentation and loader.

    ``mean``/``std`` are per channel in [0, 1] units and are applied identically to train,
    validation and test; NaN for a dataset that computes them from its training split when it
    loads (datasets declared in the settings): :func:`spec_for` gives the spec with them.
    ``crop_padding`` > 0 turns on random-crop augmentation with that padding; ``hflip`` turns
    on random horizontal flips (training batches only). ``stream`` marks a dataset read from
    files batch by batch (its loader returns :class:`FileSplit` splits) instead of held on the
    device.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[DataRequest], ImageData]
    crop_padding: int = 0
    hflip: bool = False
    description: str = ""
    stream: StreamTransform | None = None


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset spec to the registry under ``spec.name``."""
    return DATASETS.add(spec.name, spec, source=f"{spec.load.__module__}.{spec.load.__qualname__}")


@lru_cache(maxsize=4)
def load_dataset(name: str, root: str, download: bool, split_seed: int) -> ImageData:
    """Load (once per process) a registered dataset's splits."""
    request = DataRequest(Path(root) if root else default_data_root(), download, split_seed)
    return DATASETS.get(name).load(request)


def require_datasets(requests: Iterable[tuple[str, str, bool, int]]) -> None:
    """Load each ``(name, root, download, split_seed)`` of ``requests`` through
    :func:`load_dataset` (whose cache the runs then use), so that a missing or damaged dataset
    stops a command with its error before the first run trains."""
    for name, root, download, split_seed in dict.fromkeys(requests):
        load_dataset(name, root, download, split_seed)


def spec_for(name: str, data: ImageData) -> DatasetSpec:
    """The registered spec of dataset ``name`` as ``data`` is normalised: with the statistics
    ``data`` computed from its training split, when it did (see :class:`ImageData`)."""
    spec = DATASETS.get(name)
    if data.normalisation is None:
        return spec
    return dataclasses.replace(spec, mean=data.normalisation.mean, std=data.normalisation.std)


def random_split_indices(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded split of ``range(n)`` into sorted (train, val) index arrays."""
    if not 0 < n_val < n:
        raise ValueError(f"cannot hold out {n_val} of {n} samples")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def stratified_split_indices(
    labels: np.ndarray, val_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``val_per_class`` samples of every class, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    val = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        if len(members) <= val_per_class:
            raise ValueError(
                f"class {k} has {len(members)} samples; cannot hold out {val_per_class}"
            )
        val.append(rng.choice(members, size=val_per_class, replace=False))
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def split_train_set(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: Split,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    class_names: list[str] | None = None,
) -> ImageData:
    """Build :class:`ImageData` from a full training set, its split indices and the test split."""
    t, v = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return ImageData(
        train=Split(images[t], labels[t]),
        val=Split(images[v], labels[v]),
        test=test,
        train_indices=train_idx,
        val_indices=val_idx,
        class_names=list(class_names or []),
    )
