"""CAMixup, confidence-adjusted mixup (Wen et al., ICLR 2021, "Combining Ensembles and Data
Augmentation Can Harm Your Calibration").

At the end of every epoch the validation predictions decide, per class k (samples whose TRUE
label is k), whether the network is over-confident on it: mean max-probability >= accuracy.
During the next epoch a training sample is mixed exactly when its own class is marked; the
others are trained on as they are. Nothing is mixed in the first epoch.

A marked sample i is mixed with its mirror in the batch, j = B - 1 - i, with its own weight
l_i = max(u_i, 1 - u_i), u_i ~ Beta(alpha, alpha), so its own label always dominates:
x'_i = l_i x_i + (1 - l_i) x_j, loss l_i CE(z'_i, y_i) + (1 - l_i) CE(z'_i, y_j). This follows the
authors' code (google/uncertainty-baselines, google/edward2); where it differs from the paper and
where calibench differs from the code is listed in docs/stateful-methods.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from torch import nn

from calibench import Loss, Method, TrainingSetup, register_method
from calibench.settings import Gt


def overconfident_classes(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Boolean (K,): True for class k unless acc_k > conf_k, where acc_k and conf_k are the
    accuracy and mean max-probability over the samples labelled k. A class without samples is
    marked, as in the authors' code (their NaN comparison is False)."""
    probs = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    labels = np.asarray(labels)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    count = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    confidence = np.bincount(labels, weights=probs.max(axis=1), minlength=num_classes)
    underconfident = (count > 0) & (hits > confidence)
    return ~underconfident


def gated_mix(
    x: torch.Tensor, mixed: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x'_i = l_i x_i + (1 - l_i) x_{B-1-i} where ``mixed[i]``, else x_i; returns x' and the
    effective weights (l_i, or 1 where not mixed)."""
    weight = torch.where(mixed, lam, torch.ones_like(lam))
    shape = (-1,) + (1,) * (x.dim() - 1)
    blended = weight.view(shape) * x + (1 - weight.view(shape)) * x.flip(0)
    return torch.where(mixed.view(shape), blended, x), weight


def per_sample_mixup_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """mean_i [w_i CE(z_i, y_i) + (1 - w_i) CE(z_i, y'_i)]: CE against per-sample mixed labels."""
    own = F.cross_entropy(logits, y, reduction="none")
    other = F.cross_entropy(logits, y_other, reduction="none")
    return (weight * own + (1 - weight) * other).mean()


@register_method("camixup")
class CAMixup(Method):
    """Mixup only for samples of classes that were over-confident on the validation set at the
    last epoch end; one truncated Beta(alpha, alpha) weight per sample. Default alpha = 1.0, the
    benchmark's mixup setting (the authors' code mixes only for alpha < 1; see
    docs/stateful-methods.md)."""

    alpha: Annotated[float, Gt(0)] = 1.0

    def setup(self, info: TrainingSetup) -> None:
        self.mix_classes = torch.zeros(info.num_classes, dtype=torch.bool)

    def _require_setup(self) -> None:
        self.require(
            hasattr(self, "mix_classes"),
            "the per-class decision is not set up: call setup(TrainingSetup(...)) first.",
        )

    def sample_weights(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """n mixing weights max(u, 1 - u), u ~ Beta(alpha, alpha), from the method's stream."""
        u = self.rng.beta(self.alpha, self.alpha, size=n)
        return torch.from_numpy(np.maximum(u, 1 - u)).to(device=device, dtype=dtype)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        self._require_setup()
        if self.mix_classes.device != y.device:
            self.mix_classes = self.mix_classes.to(y.device)
        mixed = self.mix_classes[y]
        inputs, weight = gated_mix(x, mixed, self.sample_weights(len(y), x.device, x.dtype))
        total = per_sample_mixup_cross_entropy(model(inputs), y, y.flip(0), weight)
        return Loss(total, {"mixup_ce": total, "mixed": mixed.float().mean()})

    def on_epoch_end(self, epoch: int, val_logits: np.ndarray, val_labels: np.ndarray) -> None:
        self._require_setup()
        marked = overconfident_classes(val_logits, val_labels, len(self.mix_classes))
        self.mix_classes = torch.from_numpy(marked).to(self.mix_classes.device)

    def state_dict(self) -> dict[str, Any]:
        self._require_setup()
        return {"mix_classes": self.mix_classes.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._require_setup()
        marked = state["mix_classes"]
        self.require(
            marked.shape == self.mix_classes.shape,
            f"the saved class decision covers {len(marked)} classes, the dataset has "
            f"{len(self.mix_classes)}. Retrain the run from scratch (calibench run --force).",
        )
        self.mix_classes = marked.to(torch.bool).clone()
