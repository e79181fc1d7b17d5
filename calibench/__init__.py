"""calibench: a calibration benchmarking suite for deep classifiers.

The public names load on first use (PEP 562), so ``import calibench.spec`` and the other
torch-free modules stay free of torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from calibench.errors import CalibenchError

if TYPE_CHECKING:
    from calibench.data import (
        DataRequest,
        DatasetSpec,
        FileSplit,
        ImageData,
        Split,
        register_dataset,
    )
    from calibench.method import (
        Loss,
        Method,
        Mix,
        TrainingSetup,
        get_method,
        list_methods,
        register_method,
    )
    from calibench.models import register_backbone
    from calibench.registry import BACKBONES, DATASETS, METHODS
    from calibench.views import forward_views

_HOMES = {
    "Loss": "calibench.method",
    "Method": "calibench.method",
    "Mix": "calibench.method",
    "TrainingSetup": "calibench.method",
    "get_method": "calibench.method",
    "list_methods": "calibench.method",
    "register_method": "calibench.method",
    "BACKBONES": "calibench.registry",
    "DATASETS": "calibench.registry",
    "METHODS": "calibench.registry",
    "forward_views": "calibench.views",
    "DataRequest": "calibench.data",
    "DatasetSpec": "calibench.data",
    "FileSplit": "calibench.data",
    "ImageData": "calibench.data",
    "Split": "calibench.data",
    "register_dataset": "calibench.data",
    "register_backbone": "calibench.models",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'calibench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
