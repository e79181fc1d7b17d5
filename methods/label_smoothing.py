"""Label smoothing (Szegedy et al., CVPR 2016; for calibration, Mueller et al., NeurIPS 2019).
Defaults, their sources and the RankMixup repository's different value: docs/methods.md, "ls"."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method
from calibench.settings import Interval


def label_smoothing_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mean cross-entropy against the target (1 - alpha) * onehot(y) + alpha / K."""
    return F.cross_entropy(logits, y, label_smoothing=alpha)


@register_method("ls")
class LabelSmoothing(Method):
    """CE against (1 - alpha) * onehot + alpha / K. Default alpha = 0.05, the value of the
    focal-loss and MbLS papers' CIFAR tables; alpha = 0 is plain CE."""

    alpha: Annotated[float, Interval(0, 1, closed="left", note="1 is the uniform target")] = 0.05

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        total = label_smoothing_loss(model(x), y, self.alpha)
        return Loss(total, {"ls": total})
