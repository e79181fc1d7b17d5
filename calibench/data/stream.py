"""Streamed datasets: images read from files batch by batch, for data too large for the device.

A dataset declares that it is streamed by giving its :class:`~calibench.data.DatasetSpec` a
:class:`StreamTransform` (``stream=``) and returning :class:`FileSplit` splits (file names and
labels) from its loader; :func:`calibench.data.make_loader` then builds a :class:`StreamLoader`
for it, and a device-resident :class:`~calibench.data.loader.DeviceLoader` for every other
dataset. Both yield
normalised float batches and labels on the training device, so the trainer cannot tell them
apart. The definitions below are written out in docs/imagenet.md, "Data".

Decoding happens where it is fastest: with a CUDA device, worker processes only read the
file bytes and the main process decodes the batch on the GPU (``torchvision.io.decode_jpeg(...,
device="cuda")``) and crops there; otherwise the workers decode and crop on the CPU.

Augmentation (training only): a random resized crop (area fraction in ``scale``, aspect ratio
log-uniform in ``ratio``; Szegedy et al. 2015) resized to ``crop_size``, then a horizontal flip
with probability 1/2. Evaluation: resize the shorter side to ``resize_size``, then a central
``crop_size`` square. Each image's random draws come from its own seed, which the run's
generator draws with the epoch's permutation, so batches do not depend on the number of
workers, on the number of processes, or on where decoding happens.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from calibench.data.base import FileSplit, StreamTransform
from calibench.data.loader import LoaderConfig, batch_count, pixel_statistics

SEED_LIMIT = 2**62
"""Per-image augmentation seeds are drawn uniformly from [0, SEED_LIMIT)."""

CROP_ATTEMPTS = 10
"""Tries of a random resized crop before it falls back to a central crop."""

WORKERS_ENV = "CALIBENCH_WORKERS"
"""Environment variable that sets the data-loading worker processes per training process."""


def random_resized_crop_box(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float], rng: random.Random
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering a fraction ``scale`` of the image area with
    aspect ratio w/h drawn log-uniformly from ``ratio``; after :data:`CROP_ATTEMPTS` misses,
    the largest central crop whose ratio lies in ``ratio`` (Szegedy et al. 2015)."""
    area = height * width
    low, high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(CROP_ATTEMPTS):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(low, high))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    w, h = width, height
    if width / height < ratio[0]:
        h = round(width / ratio[0])
    elif width / height > ratio[1]:
        w = round(height * ratio[1])
    return (height - h) // 2, (width - w) // 2, h, w


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A uint8 (C, H, W) image resized to ``height`` x ``width``: bilinear with antialiasing
    (as torchvision's resize), rounded back to uint8."""
    if image.shape[-2:] == (height, width):
        return image
    out = F.interpolate(
        image[None].float(), (height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def train_view(
    image: torch.Tensor, transform: StreamTransform, hflip: bool, seed: int
) -> torch.Tensor:
    """The training view of a uint8 (3, H, W) image: random resized crop to ``crop_size``,
    then a horizontal flip with probability 1/2 when ``hflip``; draws from ``seed`` alone."""
    rng = random.Random(seed)
    top, left, h, w = random_resized_crop_box(
        image.shape[-2], image.shape[-1], transform.scale, transform.ratio, rng
    )
    size = transform.crop_size
    view = resize(image[:, top : top + h, left : left + w], size, size)
    if hflip and rng.random() < 0.5:
        view = view.flip(-1)
    return view


def eval_view(image: torch.Tensor, transform: StreamTransform) -> torch.Tensor:
    """The evaluation view of a uint8 (3, H, W) image: shorter side resized to
    ``resize_size`` (the longer one in proportion, truncated), then the central
    ``crop_size`` square."""
    h, w = image.shape[-2:]
    short = transform.resize_size
    if h <= w:
        image = resize(image, short, int(short * w / h))
    else:
        image = resize(image, int(short * h / w), short)
    h, w = image.shape[-2:]
    size = transform.crop_size
    top, left = round((h - size) / 2), round((w - size) / 2)
    return image[:, top : top + size, left : left + size]


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether the bytes start with the JPEG start-of-image marker FF D8."""
    return len(data) > 2 and int(data[0]) == 0xFF and int(data[1]) == 0xD8


def decode_rgb(data: torch.Tensor, where: str) -> torch.Tensor:
    """A file's bytes decoded to uint8 RGB (3, H, W) on the CPU (JPEG, grayscale and CMYK
    JPEG, PNG...); a damaged file is a :class:`CalibenchError` naming ``where``."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise _unreadable(where, exc) from None


def decode_batch(datas: list[torch.Tensor], device: torch.device, where: list[str]) -> list:
    """Decode a batch of file bytes to uint8 RGB images on ``device``: JPEGs together with
    ``decode_jpeg(..., device=device)`` (nvJPEG on a GPU), any other format (and any JPEG
    that batch decoding rejects) one by one on the CPU."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(datas)
    jpegs = [i for i, data in enumerate(datas) if is_jpeg(data)]
    if jpegs:
        try:
            images = decode_jpeg([datas[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, images, strict=True):
                out[i] = image
        except RuntimeError:
            pass
    for i, image in enumerate(out):
        if image is None:
            out[i] = decode_rgb(datas[i], where[i]).to(device)
    return out


def _unreadable(where: str, exc: BaseException) -> Exception:
    from calibench.errors import CalibenchError

    return CalibenchError(
        f"cannot decode image {where} ({type(exc).__name__}: {exc}); the file is damaged or not "
        "an image. Replace it with a good copy of the dataset."
    )


class FileImages(torch.utils.data.Dataset):
    """Items ``(index, seed)`` of a :class:`FileSplit` -> the model-sized uint8 view of that
    image, or with ``decode=False`` the file's raw bytes (decoded later on the device)."""

    def __init__(
        self, split: FileSplit, transform: StreamTransform, train: bool, hflip: bool, decode: bool
    ) -> None:
        self.split, self.transform = split, transform
        self.train, self.hflip, self.decode = train, hflip, decode

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        from torchvision.io import read_file

        index, seed = item
        path = self.split.path(index)
        try:
            data = read_file(path)
        except RuntimeError as exc:
            raise _unreadable(path, exc) from None
        return self.view(decode_rgb(data, path), seed) if self.decode else data

    def view(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        if self.train:
            return train_view(image, self.transform, self.hflip, seed)
        return eval_view(image, self.transform)


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


def _keep(items: list[torch.Tensor]) -> list[torch.Tensor]:
    return items


def default_workers() -> int:
    """Worker processes per training process: ``$CALIBENCH_WORKERS`` if set, else the CPUs
    this process may use divided among the node's training processes, at most 8."""
    if os.environ.get(WORKERS_ENV):
        return int(os.environ[WORKERS_ENV])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_process = (cpus or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, per_process))


class StreamLoader:
    """Iterate over normalised (and, for training, augmented) batches of a :class:`FileSplit`.

    Training: each epoch draws a permutation and one seed per image from ``generator`` and
    yields ``len(split) // batch_size`` global batches (the partial one is dropped), of which
    this process takes positions ``rank, rank + world_size, ...``. Evaluation: every image in
    order, in batches of ``batch_size``, the last one partial."""

    def __init__(self, config: LoaderConfig) -> None:
        spec, device = config.dataset, config.device
        if spec.stream is None:
            raise ValueError(f"dataset {spec.name} is not a streamed dataset")
        assert isinstance(config.split, FileSplit), "a streamed dataset's splits are FileSplits"
        self.split, self.spec, self.transform = config.split, spec, spec.stream
        self.labels = config.split.labels
        self.batch_size, self.device, self.train = config.batch_size, device, config.train
        generator = config.generator
        self.generator = generator if generator is not None else torch.Generator()
        self.rank, self.world_size = config.rank, config.world_size
        self.workers = default_workers() if config.workers is None else config.workers
        on_device = config.decode_on_device
        self.decode_on_device = device.type == "cuda" if on_device is None else on_device
        self.mean, self.std = pixel_statistics(spec, device)
        import torchvision.io  # noqa: F401  (imported once here, not in every forked worker)

    def __len__(self) -> int:
        return batch_count(len(self.split), self.batch_size, self.train)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images as the model sees them: (x - mean) / std per channel, in float32."""
        return (images.float() - self.mean) / self.std

    def gather(self, indices: Iterable[int]) -> torch.Tensor:
        """The normalised evaluation views of the split's images at ``indices``, as one tensor
        (decoded on the CPU in this process)."""
        images = FileImages(self.split, self.transform, False, self.spec.hflip, True)
        views = [images[(int(i), 0)] for i in indices]
        return self.normalise(torch.stack(views).to(self.device))

    def epoch_batches(self) -> list[list[tuple[int, int]]]:
        """This process's batches of the next epoch as lists of (image index, seed); a
        training epoch advances the generator by one permutation and one seed per image."""
        n = len(self.split)
        if not self.train:
            starts = range(0, n, self.batch_size)
            return [[(i, 0) for i in range(s, min(n, s + self.batch_size))] for s in starts]
        order = torch.randperm(n, generator=self.generator)
        seeds = torch.randint(0, SEED_LIMIT, (n,), generator=self.generator)
        batches = []
        for b in range(len(self)):
            positions = torch.arange(b * self.batch_size, (b + 1) * self.batch_size)
            mine = positions[self.rank :: self.world_size]
            batches.append(list(zip(order[mine].tolist(), seeds[mine].tolist(), strict=True)))
        return batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.indexed():
            yield x, y

    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The batches of ``iter(self)``, each with its images' positions in the split."""
        batches = self.epoch_batches()
        dataset = FileImages(
            self.split, self.transform, self.train, self.spec.hflip, not self.decode_on_device
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=_keep if self.decode_on_device else _stack,
            pin_memory=self.device.type == "cuda" and not self.decode_on_device,
        )
        for batch, data in zip(batches, loader, strict=True):
            index = torch.tensor([i for i, _ in batch])
            if self.decode_on_device:
                x = self._views_on_device(dataset, batch, data)
            else:
                x = data.to(self.device, non_blocking=True)
            labels = self.labels[index].to(self.device, non_blocking=True)
            yield self.normalise(x), labels, index.to(self.device)

    def _views_on_device(
        self, dataset: FileImages, batch: list[tuple[int, int]], datas: list[torch.Tensor]
    ) -> torch.Tensor:
        where = [self.split.path(i) for i, _ in batch]
        images = decode_batch(datas, self.device, where)
        return torch.stack(
            [dataset.view(image, seed) for image, (_, seed) in zip(images, batch, strict=True)]
        )
