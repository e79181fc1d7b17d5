"""Focal loss (Lin et al., ICCV 2017) and its calibration variant FLSD-53 (Mukhoti et al.,
NeurIPS 2020, "Calibrating Deep Neural Networks using Focal Loss"). Formulas, defaults and the
differences from the reference code: docs/methods.md, "focal" and "flsd53"."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method
from calibench.settings import Ge


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """Mean of -(1 - p_y)^gamma * log p_y; ``gamma`` is a scalar or one value per sample."""
    log_p = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return -((1 - log_p.exp()) ** gamma * log_p).mean()


def flsd53_gamma(p_true: torch.Tensor) -> torch.Tensor:
    """FLSD-53's sample-dependent gamma: 5 where p_y < 0.2, else 3, from the DETACHED p_y.

    5 and 3 are the gammas at which the focal/CE gradient ratio equals 1 at p = 0.2 and 0.25.
    Vectorised (the reference code loops over samples in Python)."""
    p = p_true.detach()
    return torch.where(p < 0.2, torch.full_like(p, 5.0), torch.full_like(p, 3.0))


@register_method("focal")
class Focal(Method):
    """Focal loss -(1 - p_y)^gamma log p_y with a fixed gamma (default 3, "FL-3" in Mukhoti et al.
    2020); gamma = 0 is CE."""

    gamma: Annotated[float, Ge(0)] = 3.0

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        total = focal_loss(model(x), y, self.gamma)
        return Loss(total, {"focal": total})


@register_method("flsd53")
class FLSD53(Method):
    """Sample-dependent focal loss FLSD-53 (Mukhoti et al. 2020): gamma = 5 if p_y < 0.2 else 3,
    chosen per sample from the detached probability. No hyperparameters."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        logits = model(x)
        p_true = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        total = focal_loss(logits, y, flsd53_gamma(p_true))
        return Loss(total, {"focal": total})
