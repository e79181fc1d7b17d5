"""Cross-entropy: the uncalibrated baseline every calibration method is measured against.
See docs/methods.md, "ce"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method


@register_method("ce")
class CrossEntropy(Method):
    """Mean cross-entropy -log p_y. No hyperparameters."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        ce = F.cross_entropy(model(x), y)
        return Loss(ce, {"ce": ce})
