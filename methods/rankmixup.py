"""RankMixup (Noh et al., ICCV 2023, "RankMixup: Ranking-Based Mixup Training for Network
Calibration"): the mixup ranking loss MRL and the mixup NDCG loss M-NDCG.

Mixed samples are NOT training targets here: the classifier is trained with CE on the raw batch
only, and the mixed samples enter through a ranking term on confidences, which says a mixed
sample should be less confident than a raw one (MRL), or that confidences should be ordered as
the mixing coefficients (M-NDCG).

Where calibench deliberately differs from the reference code:
- Mixing happens here, on the inputs, so every backbone works; the reference code builds mixing
  into special backbone classes, which leaves DenseNet without RankMixup.
- MRL applies the different-label mask per sample. The reference code broadcasts a (B,) mask
  against (B, 1) values, which turns it into a global factor mean(mask) * mean(hinge).
- MRL compares max LOGITS by default, as the reference code does (the paper writes
  probabilities, but a hinge with margin 2 on probabilities never closes); ``confidence="prob"``
  gives the paper's form.
- Mixing randomness comes from the method's generator, seeded from the run seed.

Formulas, defaults with their sources (the RankMixup repository's configs): docs/methods.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, forward_views, register_method
from calibench.settings import Ge, Gt, Interval

MAX_MIXUP = 64
"""calibench's cap on M-NDCG's mixed copies: each copy adds one batch to the mixed forward pass
(the paper uses 3)."""


def max_confidence(logits: torch.Tensor, kind: str = "prob") -> torch.Tensor:
    """max_k softmax(z)_k (``kind="prob"``) or max_k z_k (``kind="logit"``) over the last axis."""
    scores = F.softmax(logits, dim=-1) if kind == "prob" else logits
    return scores.max(dim=-1).values


def mrl_loss(
    z_raw: torch.Tensor,
    z_mix: torch.Tensor,
    different_class_mask: torch.Tensor,
    margin: float,
    confidence: str = "logit",
) -> torch.Tensor:
    """Mixup ranking loss: mean over ALL B samples of
    mask_i * relu(c(z_mix_i) - c(z_raw_i) + margin), with c the max logit (default) or max
    probability; masked samples count as zeros in the mean."""
    hinge = F.relu(max_confidence(z_mix, confidence) - max_confidence(z_raw, confidence) + margin)
    return (different_class_mask.to(hinge.dtype) * hinge).mean()


def ndcg_discounts(
    length: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """D_t = log2(t + 1) for ranks t = 1..length."""
    return torch.log2(torch.arange(2, length + 2, device=device, dtype=dtype))


def mndcg_loss(z_raw: torch.Tensor, z_mix: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """M-NDCG ranking term: mean_i (1 - NDCG_i).

    ``z_raw`` (B, K), ``z_mix`` (M, B, K) and ``relevance`` (M, B) in mixing order. Per sample, the
    list is the raw sample (relevance 1) then the M mixed copies sorted by relevance, descending;
    confidences c are max softmax probabilities in that same order (not re-sorted by c).
    DCG = sum_t c_t / log2(t + 1), IDCG = sum_t r_t / log2(t + 1),
    NDCG = min(DCG / IDCG, IDCG / DCG), so over- and under-confidence are both penalised.
    Copies with equal relevance (e.g. same-label pairs, r = 1) keep their mixing order."""
    order = relevance.argsort(dim=0, descending=True, stable=True)
    rel = torch.cat([torch.ones_like(relevance[:1]), relevance.gather(0, order)])
    conf_mix = max_confidence(z_mix, "prob").gather(0, order)
    conf = torch.cat([max_confidence(z_raw, "prob")[None], conf_mix])
    discount = ndcg_discounts(rel.shape[0], rel.device, conf.dtype)[:, None]
    dcg = (conf / discount).sum(dim=0)
    idcg = (rel.to(conf.dtype) / discount).sum(dim=0)
    ndcg = torch.minimum(dcg / idcg, idcg / dcg)
    return (1 - ndcg).mean()


def mixing_relevance(lam: float, y: torch.Tensor, y_other: torch.Tensor) -> torch.Tensor:
    """Relevance of each mixed sample: max(l, 1 - l), or 1 where both images share the label."""
    same = y == y_other
    return torch.where(
        same,
        torch.ones_like(y, dtype=torch.float32),
        torch.full_like(y, max(lam, 1 - lam), dtype=torch.float32),
    )


@register_method("rankmixup_mrl")
class RankMixupMRL(Method):
    """RankMixup with the mixup ranking loss (Noh et al. 2023):
    CE(z_raw, y) + weight * mrl_loss(z_raw, z_mix, y != y[perm], margin).

    One mixed copy per batch (l ~ Beta(alpha, alpha), random permutation), raw and mixed batches
    as two views (separate BatchNorm statistics, as in the reference code's two forward passes;
    :func:`calibench.forward_views`).
    Defaults: margin 2.0, alpha 2.0 (CIFAR; benchmark.toml sets 1.0 / 1.0 for Tiny-ImageNet),
    weight 0.1, confidence "logit". See the module docstring for the differences from the
    reference code (per-sample mask, max logits)."""

    alpha: Annotated[float, Gt(0)] = 2.0
    margin: Annotated[float, Ge(0)] = 2.0
    weight: Annotated[float, Ge(0)] = 0.1
    confidence: Literal["logit", "prob"] = "logit"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        mix = self.mix(x, self.alpha)
        z_raw, z_mix = forward_views(model, [x, mix.inputs])
        ce = F.cross_entropy(z_raw, y)
        rank = mrl_loss(z_raw, z_mix, y != y[mix.perm], self.margin, self.confidence)
        return Loss(ce + self.weight * rank, {"ce": ce, "rank": rank})


@register_method("rankmixup_mndcg")
class RankMixupMNDCG(Method):
    """RankMixup with the M-NDCG loss (Noh et al. 2023):
    CE(z_raw, y) + weight * mndcg_loss(z_raw, z_mix, relevance).

    ``num_mixup`` mixed copies, each with its own l_q ~ Beta(alpha, alpha) and permutation,
    relevance max(l_q, 1 - l_q) (1 for same-label pairs). The raw batch is one view and the M
    mixed copies, concatenated, a second one (the reference code's two forward passes;
    :func:`calibench.forward_views`). Defaults: alpha 2.0 (CIFAR;
    1.0 for Tiny-ImageNet in benchmark.toml), num_mixup 3, weight 0.1."""

    alpha: Annotated[float, Gt(0)] = 2.0
    num_mixup: Annotated[int, Interval(1, MAX_MIXUP)] = 3
    weight: Annotated[float, Ge(0)] = 0.1

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        mixes = [self.mix(x, self.alpha) for _ in range(self.num_mixup)]
        z_raw, z_mix = forward_views(model, [x, torch.cat([m.inputs for m in mixes])])
        z_mix = z_mix.view(self.num_mixup, *z_raw.shape)
        relevance = torch.stack([mixing_relevance(m.lam, y, y[m.perm]) for m in mixes])
        ce = F.cross_entropy(z_raw, y)
        rank = mndcg_loss(z_raw, z_mix, relevance)
        return Loss(ce + self.weight * rank, {"ce": ce, "rank": rank})
