"""Confidence penalty (Pereyra et al., ICLR 2017 workshop, "Regularizing Neural Networks by
Penalizing Confident Output Distributions"). Formula, defaults, their sources and the
differences from the reference code: docs/methods.md."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method
from calibench.settings import Ge


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the predictive entropy -sum_k p_k log p_k."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def entropy_term(
    logits: torch.Tensor, reduction: Literal["class_mean", "class_sum"] = "class_mean"
) -> torch.Tensor:
    """The entropy that the confidence penalty rewards.

    ``"class_mean"``: mean over all B * K entries of -p_ik log p_ik, i.e. :func:`mean_entropy`
    / K (the MbLS and RankMixup code). ``"class_sum"``: :func:`mean_entropy`, the per-sample
    entropy of Pereyra et al. 2017."""
    entropy = mean_entropy(logits)
    return entropy / logits.shape[1] if reduction == "class_mean" else entropy


@register_method("entropy_penalty")
class EntropyPenalty(Method):
    """CE - beta * entropy_term(z, reduction).

    Defaults beta = 0.1 with reduction = "class_mean", the baseline of the MbLS and RankMixup
    code (where beta is called alpha); reduction = "class_sum" is the paper's per-sample entropy,
    K times stronger at the same beta. See docs/methods.md, "entropy_penalty"."""

    beta: Annotated[float, Ge(0)] = 0.1
    reduction: Literal["class_mean", "class_sum"] = "class_mean"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        entropy = entropy_term(logits, self.reduction)
        return Loss(ce - self.beta * entropy, {"ce": ce, "entropy": entropy})
