"""Datasets: one module per family, each registering a :class:`DatasetSpec`."""

from calibench.data import cifar, digits, mnist, svhn, tiny_imagenet  # noqa: F401
from calibench.data.base import (
    DataRequest,
    DatasetSpec,
    ImageData,
    Split,
    default_data_root,
    register_dataset,
)
from calibench.data.loader import DeviceLoader

__all__ = [
    "DataRequest",
    "DatasetSpec",
    "DeviceLoader",
    "ImageData",
    "Split",
    "default_data_root",
    "register_dataset",
]
