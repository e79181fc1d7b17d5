"""Margin-based label smoothing, MbLS (Liu et al., CVPR 2022, "The Devil is in the Margin").
Defaults, their sources and the RankMixup repository's different margin: docs/methods.md, "mbls"."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method
from calibench.settings import Ge


def margin_penalty(logits: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over all (i, k) of relu(max_j z_ij - z_ik - margin): logit distances past the margin."""
    distance = logits.max(dim=1, keepdim=True).values - logits
    return F.relu(distance - margin).mean()


@register_method("mbls")
class MbLS(Method):
    """CE + alpha * margin_penalty(z, margin). Defaults margin = 10, alpha = 0.1 (the paper's).

    As in the reference code the penalty is a mean over B*K entries, so ``alpha`` equals the
    paper's lambda times K: the same alpha is weaker per logit with more classes."""

    margin: Annotated[float, Ge(0)] = 10.0
    alpha: Annotated[float, Ge(0)] = 0.1

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        margin = margin_penalty(logits, self.margin)
        return Loss(ce + self.alpha * margin, {"ce": ce, "margin": margin})
