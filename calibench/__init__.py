"""calibench: a calibration benchmarking suite for deep classifiers."""

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
    "Loss",
    "Method",
    "Mix",
    "TrainingSetup",
    "forward_views",
    "get_method",
    "list_methods",
    "register_method",
]
__version__ = "0.1.0"
