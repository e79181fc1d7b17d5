"""Mixup (Zhang et al., ICLR 2018; for calibration, Thulasidasan et al., NeurIPS 2019) and
RegMixup (Pinto et al., NeurIPS 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench import Loss, Method, register_method


def mixup_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor, lam: float
) -> torch.Tensor:
    """lam * CE(z, y) + (1 - lam) * CE(z, y_other): CE against the mixed label."""
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y_other)


@register_method("mixup")
class Mixup(Method):
    """Train on mixed inputs only: one l ~ Beta(alpha, alpha) per batch, x' = l x + (1 - l) x[perm],
    loss l CE(z', y) + (1 - l) CE(z', y[perm]). Default alpha = 1.0 (the original recipe)."""

    alpha: float = 1.0

    def validate(self) -> None:
        self.require(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")

    def loss(self, model, x, y):
        mix = self.mix(x, self.alpha)
        total = mixup_cross_entropy(model(mix.inputs), y, y[mix.perm], mix.lam)
        return Loss(total, {"mixup_ce": total})


@register_method("regmixup")
class RegMixup(Method):
    """RegMixup: CE on the clean batch + eta * mixup CE on a mixed copy with a large alpha
    (Beta(20, 20) on CIFAR-10, 10 on CIFAR-100), both in ONE forward pass over the
    concatenated batch, as in the paper. Defaults alpha = 20, eta = 1."""

    alpha: float = 20.0
    eta: float = 1.0

    def validate(self) -> None:
        self.require(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        self.require(self.eta >= 0, f"eta must be >= 0, got {self.eta}")

    def loss(self, model, x, y):
        mix = self.mix(x, self.alpha)
        logits = model(torch.cat([x, mix.inputs]))
        z_clean, z_mix = logits[: len(x)], logits[len(x) :]
        ce = F.cross_entropy(z_clean, y)
        mixed = mixup_cross_entropy(z_mix, y, y[mix.perm], mix.lam)
        return Loss(ce + self.eta * mixed, {"ce": ce, "mixup_ce": mixed})
