"""Mixup (Zhang et al., ICLR 2018; for calibration, Thulasidasan et al., NeurIPS 2019) and
RegMixup (Pinto et al., NeurIPS 2022). Formulas, defaults, their sources and the differences
from the reference code: docs/methods.md."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, register_method
from calibench.settings import Ge, Gt


def mixup_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor, lam: float
) -> torch.Tensor:
    """lam * CE(z, y) + (1 - lam) * CE(z, y_other): CE against the mixed label."""
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y_other)


def regmixup_loss(
    z_clean: torch.Tensor,
    z_mix: torch.Tensor,
    y: torch.Tensor,
    y_other: torch.Tensor,
    lam: float,
    eta: float = 1.0,
    reduction: Literal["batch_mean", "sum"] = "batch_mean",
) -> Loss:
    """RegMixup objective from the logits of the clean batch and of its mixed copy
    (Pinto et al. 2022; see docs/methods.md, "regmixup").

    ``"batch_mean"``: (CE_clean + eta * CE_mix) / 2, the mean over the concatenated 2B batch with
    the mixed half weighted by eta; at eta = 1 exactly the RegMixup code's loss.
    ``"sum"``: CE_clean + eta * CE_mix, the paper's written form (twice the code's loss).
    CE_mix is :func:`mixup_cross_entropy` of the mixed logits."""
    ce = F.cross_entropy(z_clean, y)
    mixed = mixup_cross_entropy(z_mix, y, y_other, lam)
    total = ce + eta * mixed
    if reduction == "batch_mean":
        total = total / 2
    return Loss(total, {"ce": ce, "mixup_ce": mixed})


@register_method("mixup")
class Mixup(Method):
    """Train on mixed inputs only: one l ~ Beta(alpha, alpha) per batch, x' = l x + (1 - l) x[perm],
    loss l CE(z', y) + (1 - l) CE(z', y[perm]). Default alpha = 1.0 (the original CIFAR-10
    recipe). See docs/methods.md, "mixup"."""

    alpha: Annotated[float, Gt(0)] = 1.0

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        mix = self.mix(x, self.alpha)
        total = mixup_cross_entropy(model(mix.inputs), y, y[mix.perm], mix.lam)
        return Loss(total, {"mixup_ce": total})


@register_method("regmixup")
class RegMixup(Method):
    """RegMixup: CE on the clean batch plus mixup CE on a mixed copy with a large alpha
    (Beta(20, 20) on CIFAR-10, 10 on CIFAR-100), both in ONE forward pass over the concatenated
    batch; the objective is :func:`regmixup_loss`.

    Defaults alpha = 20, eta = 1, reduction = "batch_mean", which reproduces the RegMixup code's
    loss, (CE_clean + CE_mix) / 2; reduction = "sum" gives the paper's CE_clean + eta * CE_mix.
    See docs/methods.md, "regmixup"."""

    alpha: Annotated[float, Gt(0)] = 20.0
    eta: Annotated[float, Ge(0)] = 1.0
    reduction: Literal["batch_mean", "sum"] = "batch_mean"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        mix = self.mix(x, self.alpha)
        logits = model(torch.cat([x, mix.inputs]))
        z_clean, z_mix = logits[: len(x)], logits[len(x) :]
        return regmixup_loss(z_clean, z_mix, y, y[mix.perm], mix.lam, self.eta, self.reduction)
