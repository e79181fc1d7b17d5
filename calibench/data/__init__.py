"""Datasets: one module per family, each registering a :class:`DatasetSpec`; the loaders that
turn a split into batches (:class:`Loader`, built by :func:`make_loader`)."""

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
    load_dataset,
    register_dataset,
    require_datasets,
    spec_for,
)
from calibench.data.declared import DATA_KEYS, declarations, redeclare, register_from_settings
from calibench.data.loader import DeviceLoader, Loader, LoaderConfig
from calibench.data.stream import StreamLoader

__all__ = [
    "DATA_KEYS",
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
    "declarations",
    "default_data_root",
    "load_dataset",
    "make_loader",
    "redeclare",
    "register_dataset",
    "register_from_settings",
    "require_datasets",
    "spec_for",
]


def make_loader(config: LoaderConfig) -> Loader:
    """The loader ``config.dataset`` asks for: a :class:`StreamLoader` when its spec has
    ``stream`` set (its splits are :class:`FileSplit`), else a :class:`DeviceLoader`."""
    if config.dataset.stream is not None:
        return StreamLoader(config)
    return DeviceLoader(config)
