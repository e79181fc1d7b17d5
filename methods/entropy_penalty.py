"""Confidence penalty (Pereyra et al., ICLR 2017 workshop, "Regularizing Neural Networks by
Penalizing Confident Output Distributions")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench import Loss, Method, register_method


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean predictive entropy -sum_k p_k log p_k."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


@register_method("entropy_penalty")
class EntropyPenalty(Method):
    """CE - beta * mean entropy of the prediction. Default beta = 0.1."""

    beta: float = 0.1

    def validate(self) -> None:
        self.require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")

    def loss(self, model, x, y):
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        entropy = mean_entropy(logits)
        return Loss(ce - self.beta * entropy, {"ce": ce, "entropy": entropy})
