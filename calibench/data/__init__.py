"""Datasets: one module per family, each registering a :class:`DatasetSpec`."""

from functools import lru_cache
from pathlib import Path

from calibench.data import cifar, digits, imagenet, mnist, svhn, tiny_imagenet  # noqa: F401
from calibench.data.base import (
    DataRequest,
    DatasetSpec,
    ImageData,
    Split,
    default_data_root,
    register_dataset,
)
from calibench.data.loader import DeviceLoader
from calibench.data.stream import FileSplit, StreamLoader, StreamTransform, make_loader
from calibench.registry import DATASETS

__all__ = [
    "DataRequest",
    "DatasetSpec",
    "DeviceLoader",
    "FileSplit",
    "ImageData",
    "Split",
    "StreamLoader",
    "StreamTransform",
    "default_data_root",
    "load_dataset",
    "make_loader",
    "register_dataset",
]


@lru_cache(maxsize=4)
def load_dataset(name: str, root: str, download: bool, split_seed: int) -> ImageData:
    """Load (once per process) a registered dataset's splits."""
    request = DataRequest(Path(root) if root else default_data_root(), download, split_seed)
    return DATASETS.get(name).load(request)
