"""Datasets: one module per family, each registering a :class:`DatasetSpec`; the loaders that
turn a split into batches (:class:`Loader`, built by :func:`make_loader`)."""

from functools import lru_cache
from pathlib import Path

from calibench.data import cifar, digits, imagenet, mnist, svhn, tiny_imagenet  # noqa: F401
from calibench.data.base import (
    AnySplit,
    DataRequest,
    DatasetSpec,
    FileSplit,
    ImageData,
    Normalisation,
    Split,
    StreamTransform,
    default_data_root,
    register_dataset,
    spec_for,
)
from calibench.data.loader import DeviceLoader, Loader, LoaderConfig
from calibench.data.stream import StreamLoader
from calibench.registry import DATASETS

__all__ = [
    "AnySplit",
    "DataRequest",
    "DatasetSpec",
    "DeviceLoader",
    "FileSplit",
    "ImageData",
    "Loader",
    "LoaderConfig",
    "Normalisation",
    "Split",
    "StreamLoader",
    "StreamTransform",
    "default_data_root",
    "load_dataset",
    "make_loader",
    "register_dataset",
    "spec_for",
]


def make_loader(config: LoaderConfig) -> Loader:
    """The loader ``config.dataset`` asks for: a :class:`StreamLoader` when its spec has
    ``stream`` set (its splits are :class:`FileSplit`), else a :class:`DeviceLoader`."""
    if config.dataset.stream is not None:
        return StreamLoader(config)
    return DeviceLoader(config)


@lru_cache(maxsize=4)
def load_dataset(name: str, root: str, download: bool, split_seed: int) -> ImageData:
    """Load (once per process) a registered dataset's splits."""
    request = DataRequest(Path(root) if root else default_data_root(), download, split_seed)
    return DATASETS.get(name).load(request)
