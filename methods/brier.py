"""Brier score as a training loss (Brier 1950; as a calibration baseline, Mukhoti et al. 2020).
See docs/methods.md, "brier"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method


def brier_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over samples of sum_k (p_k - onehot(y)_k)^2."""
    p = F.softmax(logits, dim=1)
    return ((p - F.one_hot(y, p.shape[1]).to(p.dtype)) ** 2).sum(dim=1).mean()


@register_method("brier")
class Brier(Method):
    """Train on the Brier score instead of CE. No hyperparameters."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        total = brier_loss(model(x), y)
        return Loss(total, {"brier": total})
