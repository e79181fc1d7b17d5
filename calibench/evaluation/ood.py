"""Out-of-distribution detection scores from softmax outputs (docs/metrics.md, "OOD detection
AUROC"): normalised predictive entropy and maximum softmax probability (Hendrycks and Gimpel,
ICLR 2017), each summarised by the area under the ROC curve."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from calibench.evaluation.metrics import softmax


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy -sum_k p_k log p_k divided by log K, in [0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -plogp.sum(axis=1) / np.log(probs.shape[1])


def ood_auroc(id_logits: np.ndarray, ood_logits: np.ndarray, temperature: float = 1.0) -> dict:
    """AUROC of OOD detection by two scores (docs/metrics.md): normalised entropy with OOD as
    the positive class, and max softmax probability with in-distribution as the positive class
    (Hendrycks & Gimpel 2017)."""
    p_id = softmax(np.asarray(id_logits, dtype=np.float64) / temperature)
    p_ood = softmax(np.asarray(ood_logits, dtype=np.float64) / temperature)
    return ood_auroc_of_probabilities(p_id, p_ood)


def ood_auroc_of_probabilities(p_id: np.ndarray, p_ood: np.ndarray) -> dict:
    """:func:`ood_auroc` of probabilities (e.g. after a post-hoc calibrator)."""
    p_id, p_ood = np.asarray(p_id, dtype=np.float64), np.asarray(p_ood, dtype=np.float64)
    is_ood = np.r_[np.zeros(len(p_id)), np.ones(len(p_ood))]
    entropy = np.r_[normalised_entropy(p_id), normalised_entropy(p_ood)]
    msp = np.r_[p_id.max(axis=1), p_ood.max(axis=1)]
    return {
        "auroc_entropy": float(roc_auc_score(is_ood, entropy)),
        "auroc_msp": float(roc_auc_score(1 - is_ood, msp)),
    }
