"""calibench: a calibration benchmarking suite for deep classifiers."""

from typing import Any

from calibench.errors import CalibenchError
from calibench.method import (
    Loss,
    Method,
    Mix,
    TrainingSetup,
    get_method,
    list_methods,
    register_method,
)
from calibench.registry import BACKBONES, DATASETS, METHODS
from calibench.views import forward_views

__all__ = [
    "BACKBONES",
    "DATASETS",
    "METHODS",
    "CalibenchError",
    "DataRequest",
    "DatasetSpec",
    "FileSplit",
    "ImageData",
    "Loss",
    "Method",
    "Mix",
    "Split",
    "TrainingSetup",
    "forward_views",
    "get_method",
    "list_methods",
    "register_backbone",
    "register_dataset",
    "register_method",
]
__version__ = "0.1.0"

_LAZY = {
    "DataRequest": "calibench.data",
    "DatasetSpec": "calibench.data",
    "FileSplit": "calibench.data",
    "ImageData": "calibench.data",
    "Split": "calibench.data",
    "register_dataset": "calibench.data",
    "register_backbone": "calibench.models",
}
"""Names of the dataset and backbone plugin contract, imported on first use (they load every
dataset family and backbone)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'calibench' has no attribute {name!r}")
