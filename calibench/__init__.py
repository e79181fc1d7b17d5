"""calibench: a calibration benchmarking suite for deep classifiers.

The public face for plugins and scripts. Each name is imported from its module on first use
(a module ``__getattr__``, PEP 562), so ``import calibench`` and the commands that need no
model (``calibench --help``, ``status``, ``init``) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calibench.data import (
        DataRequest,
        DatasetSpec,
        FileSplit,
        ImageData,
        Split,
        register_dataset,
    )
    from calibench.errors import CalibenchError
    from calibench.evaluation.calibrators import Calibrator, register_calibrator
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
    from calibench.registry import BACKBONES, CALIBRATORS, DATASETS, METHODS
    from calibench.views import forward_views

PUBLIC: dict[str, str] = {
    "BACKBONES": "calibench.registry",
    "CALIBRATORS": "calibench.registry",
    "DATASETS": "calibench.registry",
    "METHODS": "calibench.registry",
    "CalibenchError": "calibench.errors",
    "Calibrator": "calibench.evaluation.calibrators",
    "DataRequest": "calibench.data",
    "DatasetSpec": "calibench.data",
    "FileSplit": "calibench.data",
    "ImageData": "calibench.data",
    "Split": "calibench.data",
    "Loss": "calibench.method",
    "Method": "calibench.method",
    "Mix": "calibench.method",
    "TrainingSetup": "calibench.method",
    "forward_views": "calibench.views",
    "get_method": "calibench.method",
    "list_methods": "calibench.method",
    "register_backbone": "calibench.models",
    "register_calibrator": "calibench.evaluation.calibrators",
    "register_dataset": "calibench.data",
    "register_method": "calibench.method",
}
"""Each public name and the module it lives in."""

__all__ = [
    "BACKBONES",
    "CALIBRATORS",
    "CalibenchError",
    "Calibrator",
    "DATASETS",
    "DataRequest",
    "DatasetSpec",
    "FileSplit",
    "ImageData",
    "Loss",
    "METHODS",
    "Method",
    "Mix",
    "Split",
    "TrainingSetup",
    "forward_views",
    "get_method",
    "list_methods",
    "register_backbone",
    "register_calibrator",
    "register_dataset",
    "register_method",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import public name ``name`` from its module on first access and keep it here."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'calibench' has no attribute {name!r}")
    value = getattr(importlib.import_module(PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *PUBLIC})
