"""The training pipeline of the official RankMixup code, rebuilt for speed comparisons.

``calibench bench --against reference`` times calibench's training step beside this one
(docs/speed.md). What it mirrors, from the official code's CIFAR data module and trainer:

- the data path: a torchvision-style ``Dataset`` over uint8 images that turns each sample into a
  PIL image and runs per-sample transforms, ``RandomCrop(size, padding)`` and
  ``RandomHorizontalFlip()`` where the dataset augments (its ``crop_padding`` and ``hflip``),
  then ``ToTensor()`` and ``Normalize(mean, std)``; a ``torch.utils.data.DataLoader`` with worker
  processes (default ``min(4, cpu count)``), shuffling, ``drop_last`` and ``pin_memory`` on CUDA;
  each batch copied to the device with a plain ``.to(device)``;
- the step: float32 throughout (no autocast), the method's forward passes, ``zero_grad``,
  ``backward``, gradient clipping to a global norm, ``optimizer.step()``. The official trainer
  runs the raw batch as one forward pass and all mixed copies as a second one over their
  concatenation (its ``forward_multimixup``; one copy for MRL, three for M-NDCG), and mixup as a
  single pass over the mixed batch: calibench's methods make exactly these passes, so the step
  calls the method's own ``loss`` (through :func:`calibench.method.training_loss`).

Added: each sample carries its position in the split, for methods that keep per-sample state.
What it does not mirror: the official trainer's per-step bookkeeping (softmax of the outputs, a
copy of predictions and logits to the host and the loss meters, each a device synchronisation),
its hydra/wandb set-up, and worker start-up at every epoch (the bench keeps workers alive
across blocks). Each omission makes this path faster than the official code, so a speed-up
measured against it is a lower bound on the speed-up against that code.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from calibench.data.base import DatasetSpec, Split
from calibench.method import Method, training_loss


def default_num_workers() -> int:
    """``min(4, cpu count)``: the official code's four workers, fewer on a smaller machine."""
    return min(4, os.cpu_count() or 1)


def reference_transform(spec: DatasetSpec, train: bool = True) -> transforms.Compose:
    """Per-sample PIL transforms: random crop and flip (training, where ``spec`` augments), then
    ``ToTensor`` (to [0, 1]) and ``Normalize(spec.mean, spec.std)``."""
    steps: list = []
    if train and spec.crop_padding > 0:
        steps.append(transforms.RandomCrop(spec.image_size, padding=spec.crop_padding))
    if train and spec.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    return transforms.Compose(steps)


class PILImageDataset(Dataset):
    """A torchvision-style dataset: uint8 images held as (N, H, W[, C]) numpy arrays, each
    sample decoded to a PIL image ("L" for one channel, "RGB" for three) and transformed.
    A sample is (image, label, its position), the position for methods that keep per-sample
    state."""

    def __init__(self, split: Split, transform: transforms.Compose) -> None:
        images = split.images.numpy()
        self.images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
        self.images = np.ascontiguousarray(self.images)
        self.labels = split.labels.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = Image.fromarray(self.images[index])
        return self.transform(image), int(self.labels[index]), index


def reference_loader(
    split: Split,
    spec: DatasetSpec,
    batch_size: int,
    device: torch.device,
    num_workers: int | None = None,
    seed: int = 0,
    train: bool = True,
) -> DataLoader:
    """A shuffling ``DataLoader`` over :class:`PILImageDataset` with ``num_workers`` processes
    (kept alive between epochs), ``pin_memory`` on CUDA and, for training, ``drop_last``."""
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        PILImageDataset(split, reference_transform(spec, train)),
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=train,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def reference_train_step(
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    device: torch.device,
    grad_clip: float,
) -> torch.Tensor:
    """One float32 step as the official trainer takes it: copy the batch to ``device``, the
    method's loss, ``zero_grad``, ``backward``, clip to global norm ``grad_clip`` (0: off),
    ``step``. Returns the loss."""
    x, y, indices = x.to(device), y.to(device), indices.to(device)
    total = training_loss(method, model, x, y, indices).total
    optimizer.zero_grad()
    total.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total
