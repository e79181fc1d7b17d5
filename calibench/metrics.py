"""Calibration metrics, temperature scaling and OOD scores: pure functions on arrays, in float64.

Notation: logits z (N, K), probabilities p = softmax(z), confidence conf = max_k p_k, labels y.
Binning follows REFERENCE.md section 2: a sample belongs to bin b when lo_b < conf <= hi_b, and
the first bin also takes conf equal to its lower edge (the reference code drops conf = 0).
The same :func:`calibration_bins` feeds the table's ECE and the reliability diagram.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

N_BINS = 15
TEMPERATURE_GRID = np.round(np.arange(1, 101) * 0.1, 1)


def _as_f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    return np.exp(log_softmax(_as_f64(logits), axis=1))


@dataclass(frozen=True)
class BinStats:
    """Per-bin sample counts, mean accuracy and mean confidence (NaN for empty bins)."""

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def gaps(self) -> np.ndarray:
        """|acc_b - conf_b| per bin (NaN for empty bins)."""
        return np.abs(self.accuracy - self.confidence)

    def expected_error(self) -> float:
        """sum_b (n_b / N) |acc_b - conf_b|."""
        filled = self.counts > 0
        return float(np.sum(self.counts[filled] / self.total * self.gaps[filled]))

    def max_error(self) -> float:
        """max over non-empty bins of |acc_b - conf_b|."""
        filled = self.counts > 0
        return float(np.max(self.gaps[filled])) if filled.any() else 0.0


def equal_width_edges(n_bins: int = N_BINS) -> np.ndarray:
    """Bin edges linspace(0, 1, n_bins + 1)."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def equal_mass_edges(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Adaptive edges: linspace(0, N, n_bins + 1) interpolated into the sorted confidences."""
    conf = np.sort(_as_f64(confidence))
    n = len(conf)
    return np.interp(np.linspace(0, n, n_bins + 1), np.arange(n), conf)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> BinStats:
    """Group samples into bins (lo, hi] (the first bin closed below) and summarise each bin."""
    conf = _as_f64(confidence)
    hit = _as_f64(correct)
    n_bins = len(edges) - 1
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=hit, minlength=n_bins) / counts
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / counts
    return BinStats(np.asarray(edges, dtype=np.float64), counts, accuracy, mean_conf)


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence max_k p_k and correctness 1[argmax_k p_k = y] per sample."""
    probs = _as_f64(probs)
    return probs.max(axis=1), (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood -log p_y, from logits for numerical accuracy."""
    logp = log_softmax(_as_f64(logits), axis=1)
    return float(-np.mean(logp[np.arange(len(labels)), np.asarray(labels)]))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score: mean over samples of sum_k (p_k - 1[y = k])^2 (Brier 1950)."""
    probs = _as_f64(probs)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error with equal-width bins (Naeini et al. 2015; Guo et al. 2017)."""
    conf, hit = top_label(probs, labels)
    return calibration_bins(conf, hit, equal_width_edges(n_bins)).expected_error()


def adaece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Adaptive ECE: ECE over equal-mass bins (Nguyen & O'Connor 2015; Mukhoti et al. 2020)."""
    conf, hit = top_label(probs, labels)
    return calibration_bins(conf, hit, equal_mass_edges(conf, n_bins)).expected_error()


def mce(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Maximum calibration error over non-empty equal-width bins (Naeini et al. 2015)."""
    conf, hit = top_label(probs, labels)
    return calibration_bins(conf, hit, equal_width_edges(n_bins)).max_error()


def cece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Classwise ECE: for each class k, ECE of p_k against 1[y = k], averaged over all K classes
    (Kull et al. 2019; K is the width of ``probs``, not max(label) + 1)."""
    probs = _as_f64(probs)
    labels = np.asarray(labels)
    edges = equal_width_edges(n_bins)
    per_class = [
        calibration_bins(probs[:, k], labels == k, edges).expected_error()
        for k in range(probs.shape[1])
    ]
    return float(np.mean(per_class))


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """acc, nll, brier, ece, adaece, cece and mce of one set of logits."""
    probs = softmax(logits)
    return {
        "acc": accuracy(probs, labels),
        "nll": nll(logits, labels),
        "brier": brier(probs, labels),
        "ece": ece(probs, labels, n_bins),
        "adaece": adaece(probs, labels, n_bins),
        "cece": cece(probs, labels, n_bins),
        "mce": mce(probs, labels, n_bins),
    }


def fit_temperature_grid(
    logits: np.ndarray,
    labels: np.ndarray,
    grid: np.ndarray = TEMPERATURE_GRID,
    n_bins: int = N_BINS,
) -> float:
    """Temperature scaling, reference protocol: the T in ``grid`` (0.1, 0.2, ..., 10.0) with the
    lowest ECE of softmax(z / T) on VALIDATION logits (Guo et al. 2017; Mukhoti et al. 2020).
    Ties go to the smallest T."""
    logits = _as_f64(logits)
    errors = [ece(softmax(logits / t), labels, n_bins) for t in grid]
    return float(grid[int(np.argmin(errors))])


def fit_temperature_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling by NLL: minimise mean -log softmax(z / T)_y over log T with L-BFGS
    on VALIDATION logits (Guo et al. 2017)."""
    from scipy.optimize import minimize

    logits = _as_f64(logits)
    labels = np.asarray(labels)

    def objective(log_t: np.ndarray) -> float:
        return nll(logits / np.exp(log_t[0]), labels)

    result = minimize(objective, x0=np.zeros(1), method="L-BFGS-B", bounds=[(-5.0, 5.0)])
    return float(np.exp(result.x[0]))


TEMPERATURE_FITS = ("ece_grid", "nll")


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, method: str = "ece_grid", n_bins: int = N_BINS
) -> float:
    """Fit T on validation logits by ``method``: ``ece_grid`` (reference protocol) or ``nll``."""
    if method == "ece_grid":
        return fit_temperature_grid(logits, labels, n_bins=n_bins)
    if method == "nll":
        return fit_temperature_nll(logits, labels)
    raise ValueError(f"unknown temperature fit {method!r}; choose from {TEMPERATURE_FITS}")


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy -sum_k p_k log p_k divided by log K, in [0, 1]."""
    probs = _as_f64(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -plogp.sum(axis=1) / np.log(probs.shape[1])


def ood_auroc(id_logits: np.ndarray, ood_logits: np.ndarray, temperature: float = 1.0) -> dict:
    """AUROC of OOD detection by two scores (REFERENCE.md 2.2): normalised entropy with OOD as
    the positive class, and max softmax probability with in-distribution as the positive class
    (Hendrycks & Gimpel 2017)."""
    from sklearn.metrics import roc_auc_score

    p_id = softmax(_as_f64(id_logits) / temperature)
    p_ood = softmax(_as_f64(ood_logits) / temperature)
    is_ood = np.r_[np.zeros(len(p_id)), np.ones(len(p_ood))]
    entropy = np.r_[normalised_entropy(p_id), normalised_entropy(p_ood)]
    msp = np.r_[p_id.max(axis=1), p_ood.max(axis=1)]
    return {
        "auroc_entropy": float(roc_auc_score(is_ood, entropy)),
        "auroc_msp": float(roc_auc_score(1 - is_ood, msp)),
    }
