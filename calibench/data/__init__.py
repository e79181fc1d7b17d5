"""Datasets: one module per family, each registering a :class:`DatasetSpec`."""

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
    "make_loader",
    "register_dataset",
]
