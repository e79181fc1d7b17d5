"""Label smoothing (Szegedy et al., CVPR 2016; for calibration, Mueller et al., NeurIPS 2019).
Defaults, their sources and the RankMixup repository's different value: docs/methods.md, "ls"."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench import Loss, Method, register_method


def label_smoothing_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mean cross-entropy against the target (1 - alpha) * onehot(y) + alpha / K."""
    return F.cross_entropy(logits, y, label_smoothing=alpha)


@register_method("ls")
class LabelSmoothing(Method):
    """CE against (1 - alpha) * onehot + alpha / K. Default alpha = 0.05, the value of the
    focal-loss and MbLS papers' CIFAR tables; alpha = 0 is plain CE."""

    alpha: float = 0.05

    def validate(self) -> None:
        self.require(0.0 <= self.alpha < 1.0, f"alpha must be in [0, 1), got {self.alpha}")

    def loss(self, model, x, y):
        total = label_smoothing_loss(model(x), y, self.alpha)
        return Loss(total, {"ls": total})
