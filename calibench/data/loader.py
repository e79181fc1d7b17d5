"""What every batch loader is (:class:`Loader`, built from one :class:`LoaderConfig`), and the
device-resident one, in the spirit of airbench (:class:`DeviceLoader`); the streamed one is
:class:`~calibench.data.stream.StreamLoader`, and :func:`calibench.data.make_loader` picks.

The whole split lives on the training device as uint8; each batch is augmented (zero padding is
black, as in torchvision's RandomCrop) and then normalised, with batched tensor ops (random crop
by gather, horizontal flip by ``where``), with no worker processes. Shuffling and augmentation
draw from a ``torch.Generator`` so runs are reproducible and resumable (the generator's state is
checkpointed with the run).

Sharding (one run over ``world_size`` processes, docs/imagenet.md): every process draws the same
permutation and augments the whole global batch with the same draws, then keeps its own rows
(positions ``rank, rank + world_size, ...``), so that the processes' batches together are, image
for image, the single-process batch, and the generators of all processes stay equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from calibench.data.base import AnySplit, DatasetSpec, Split


@dataclass(frozen=True)
class LoaderConfig:
    """Everything a loader is built from.

    ``batch_size`` is the global batch; with ``world_size`` > 1 each process (``rank``) gets its
    ``batch_size / world_size`` share of every training batch. ``train`` shuffles, augments and
    drops the last partial batch, drawing from ``generator``. ``workers`` (data-loading
    processes; None: :func:`~calibench.data.stream.default_workers`) and ``decode_on_device``
    (None: on a CUDA device) concern streamed datasets only."""

    split: AnySplit
    dataset: DatasetSpec
    batch_size: int
    device: torch.device
    train: bool = False
    generator: torch.Generator | None = None
    rank: int = 0
    world_size: int = 1
    workers: int | None = None
    decode_on_device: bool | None = None


class Loader(Protocol):
    """Normalised (and, for training, augmented) batches of one split on the training device;
    the trainer, evaluation and diagnostics see nothing else of the data."""

    device: torch.device
    batch_size: int
    labels: torch.Tensor

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...
    def normalise(self, images: torch.Tensor) -> torch.Tensor: ...
    def gather(self, indices: Iterable[int]) -> torch.Tensor: ...


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop each image of a (B, C, H, W) batch at a random offset after zero-padding it by
    ``padding`` on every side."""
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of a (B, C, H, W) batch left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def pixel_statistics(spec: DatasetSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's per-channel mean and std in uint8 units, shaped (1, C, 1, 1)."""
    shape = (1, -1, 1, 1)
    mean = torch.tensor(spec.mean, device=device, dtype=torch.float32).view(shape) * 255
    return mean, torch.tensor(spec.std, device=device, dtype=torch.float32).view(shape) * 255


def batch_count(n: int, batch_size: int, train: bool) -> int:
    """Batches per epoch: the last partial batch is dropped for training, kept for evaluation."""
    return n // batch_size if train else -(-n // batch_size)


class DeviceLoader:
    """Iterate over normalised (and, for training, augmented) batches of one in-memory split."""

    def __init__(self, config: LoaderConfig) -> None:
        device = config.device
        assert isinstance(config.split, Split), "a FileSplit is streamed (StreamLoader)"
        self.images = config.split.images.to(device)
        self.labels = config.split.labels.to(device)
        self.device = device
        self.batch_size = config.batch_size
        self.rank, self.world_size = config.rank, config.world_size
        self.train = config.train
        self.spec = config.dataset
        generator = config.generator
        self.generator = generator if generator is not None else torch.Generator()
        self.mean, self.std = pixel_statistics(config.dataset, device)

    def __len__(self) -> int:
        return batch_count(len(self.labels), self.batch_size, self.train)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images as the model sees them: (x - mean) / std per channel, in float32."""
        return (images.float() - self.mean) / self.std

    def gather(self, indices: Iterable[int]) -> torch.Tensor:
        """The normalised, unaugmented images at ``indices`` of the split, as one tensor."""
        index = torch.as_tensor(list(indices), dtype=torch.int64, device=self.images.device)
        return self.normalise(self.images[index])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.indexed():
            yield x, y

    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The batches of ``iter(self)``, each with its samples' positions in the split: the
        same batches from the same random draws, so asking for indices changes nothing else."""
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=self.generator).to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if self.train and self.spec.crop_padding > 0:
                x = random_crop(x, self.spec.crop_padding, self.generator)
            if self.train and self.spec.hflip:
                x = random_hflip(x, self.generator)
            if self.world_size > 1:
                x, idx = x[self.rank :: self.world_size], idx[self.rank :: self.world_size]
            yield self.normalise(x), self.labels[idx], idx
