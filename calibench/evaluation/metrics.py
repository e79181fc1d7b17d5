"""Calibration metrics and THE metric table: pure functions on arrays, in float64.

Notation: logits z (N, K), probabilities p = softmax(z), confidence conf = max_k p_k, labels y.
Every definition, binning convention and source is written out in docs/metrics.md. A sample
belongs to bin b when lo_b < conf <= hi_b, and the first bin also takes conf equal to its lower
edge (the reference code drops conf = 0). The same :func:`calibration_bins` feeds the table's ECE
and the reliability diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.fft import dct
from scipy.optimize import brentq
from scipy.special import log_softmax

from calibench.errors import CalibenchError

N_BINS = 15


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


def over_under_confidence(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> tuple[float, float]:
    """Over- and under-confidence, the signed halves of :func:`ece` on the same equal-width bins:
    sum_b (n_b / N) max(conf_b - acc_b, 0) and sum_b (n_b / N) max(acc_b - conf_b, 0), so
    oe + ue = ece (OE after Thulasidasan et al. 2019, without their conf_b factor)."""
    conf, hit = top_label(probs, labels)
    bins = calibration_bins(conf, hit, equal_width_edges(n_bins))
    filled = bins.counts > 0
    weight = bins.counts[filled] / bins.total
    excess = bins.confidence[filled] - bins.accuracy[filled]
    over = np.sum(weight * np.maximum(excess, 0.0))
    under = np.sum(weight * np.maximum(-excess, 0.0))
    return float(over), float(under)


def split_equal_mass_edges(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Equal-mass edges as Kumar et al. (2019) build them: the sorted confidences cut into
    min(n_bins, N) consecutive groups whose sizes differ by at most one (larger groups first),
    each inner edge halfway between the last value of a group and the first of the next; the
    outer edges are 0 and 1."""
    conf = np.sort(_as_f64(confidence))
    n = len(conf)
    n_bins = min(n_bins, n)
    sizes = np.full(n_bins, n // n_bins)
    sizes[: n % n_bins] += 1
    ends = np.cumsum(sizes)[:-1]
    return np.r_[0.0, (conf[ends - 1] + conf[ends]) / 2, 1.0]


def debiased_l2_ce(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Debiased top-label L2 calibration error (Kumar, Liang & Ma, NeurIPS 2019) on the equal-mass
    bins of :func:`split_equal_mass_edges`: sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 -
    acc_b (1 - acc_b) / (n_b - 1)])); bins with fewer than 2 samples add 0."""
    conf, hit = top_label(probs, labels)
    bins = calibration_bins(conf, hit, split_equal_mass_edges(conf, n_bins))
    usable = bins.counts >= 2
    count, acc = bins.counts[usable], bins.accuracy[usable]
    bias = acc * (1.0 - acc) / (count - 1.0)
    squared = np.sum(count / bins.total * ((acc - bins.confidence[usable]) ** 2 - bias))
    return float(np.sqrt(max(squared, 0.0)))


def ks_error(probs: np.ndarray, labels: np.ndarray) -> float:
    """Kolmogorov-Smirnov calibration error (Gupta et al., ICLR 2021): with samples sorted by
    confidence, max_i |sum_{j<=i} (conf_j - correct_j)| / N, taken at the last sample of each
    group of equal confidences so that the order within ties does not matter."""
    conf, hit = top_label(probs, labels)
    order = np.argsort(conf, kind="stable")
    conf, hit = conf[order], hit[order]
    gap = np.cumsum(conf - hit) / len(conf)
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    return float(np.max(np.abs(gap[last_of_tie])))


def aurc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman et al., ICLR 2019): with samples sorted by
    confidence, descending, the mean over k = 1..N of the error rate of the k most confident.
    Within a group of equal confidences the errors count as spread evenly, which is the mean
    over every order of the tied samples."""
    conf, hit = top_label(probs, labels)
    if not np.all(np.isfinite(conf)):
        return float("nan")
    order = np.argsort(-conf, kind="stable")
    conf, error = conf[order], 1.0 - hit[order]
    n = len(conf)
    first = np.flatnonzero(np.r_[True, conf[1:] != conf[:-1]])
    group = np.repeat(np.arange(len(first)), np.diff(np.r_[first, n]))
    size = np.diff(np.r_[first, n])[group]
    errors_before = np.r_[0.0, np.cumsum(error)][first][group]
    group_errors = np.add.reduceat(error, first)[group]
    k = np.arange(1, n + 1)
    errors_in_top_k = errors_before + (k - first[group]) * group_errors / size
    return float(np.mean(errors_in_top_k / k))


SMECE_GRID = 2**16
SMECE_MIN_SIGMA = 1e-3


def _residual_cosine_coefficients(conf: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """c_n = (1/N) sum_i (correct_i - conf_i) cos(n pi conf_i) for n = 0..G (G = SMECE_GRID),
    each conf_i first spread linearly over its two neighbouring grid nodes j / G."""
    pos = conf * SMECE_GRID
    left = np.clip(np.floor(pos).astype(np.int64), 0, SMECE_GRID - 1)
    right_share = pos - left
    residual = hit - conf
    size = SMECE_GRID + 1
    mass: np.ndarray = np.bincount(left, (1.0 - right_share) * residual, minlength=size)  # float64
    mass += np.bincount(left + 1, right_share * residual, minlength=size)
    mass[[0, -1]] *= 2.0
    return dct(mass, type=1) / (2.0 * len(conf))


def _smooth_ece_at(coefficients: np.ndarray, sigma: float) -> float:
    """Integral over [0, 1] of |g(t)|, g(t) = c_0 + 2 sum_{n>=1} exp(-(pi n sigma)^2 / 2) c_n
    cos(n pi t) (the residual smoothed by the reflected Gaussian kernel), by the trapezoid rule
    on M + 1 nodes j / M, M the power of two >= 64 / sigma (at least 256, at most G)."""
    m = min(SMECE_GRID, 1 << int(np.ceil(np.log2(max(256.0, 64.0 / sigma)))))
    damped = np.exp(-0.5 * (np.pi * sigma * np.arange(m + 1)) ** 2) * coefficients[: m + 1]
    damped[-1] *= 2.0
    smoothed = np.abs(dct(damped, type=1))
    return float((smoothed.sum() - 0.5 * (smoothed[0] + smoothed[-1])) / m)


def smooth_ece_from_confidence(
    confidence: np.ndarray, correct: np.ndarray, sigma: float | None = None
) -> tuple[float, float]:
    """Smooth ECE of binary outcomes and its bandwidth, (smECE, sigma): the integral over t in
    [0, 1] of |(1/N) sum_i K_sigma(t, conf_i) (correct_i - conf_i)|, K_sigma the Gaussian kernel
    reflected at 0 and 1; by default sigma is the fixed point smECE(sigma) = sigma (Blasiok &
    Nakkiran, ICLR 2024), or SMECE_MIN_SIGMA when that lies below it."""
    conf, hit = _as_f64(confidence), _as_f64(correct)
    if sigma is not None and not sigma >= SMECE_MIN_SIGMA:
        raise CalibenchError(f"smooth ECE bandwidth {sigma} is too small: use sigma >= 0.001")
    if len(conf) == 0 or not np.all(np.isfinite(conf)):
        return float("nan"), (float("nan") if sigma is None else sigma)
    coefficients = _residual_cosine_coefficients(conf, hit)
    if sigma is None:

        def excess(s: float) -> float:
            return _smooth_ece_at(coefficients, s) - s

        if excess(SMECE_MIN_SIGMA) <= 0.0:
            sigma = SMECE_MIN_SIGMA
        elif excess(1.0) >= 0.0:
            sigma = 1.0
        else:
            sigma = brentq(excess, SMECE_MIN_SIGMA, 1.0, xtol=1e-10)
    return _smooth_ece_at(coefficients, sigma), float(sigma)


def smooth_ece(probs: np.ndarray, labels: np.ndarray, sigma: float | None = None) -> float:
    """Top-label smooth ECE (Blasiok & Nakkiran, ICLR 2024): the residual correct - conf smoothed
    by a Gaussian kernel reflected at 0 and 1, integrated in absolute value; the bandwidth is the
    fixed point smECE(sigma) = sigma unless ``sigma`` is given
    (see :func:`smooth_ece_from_confidence`)."""
    conf, hit = top_label(probs, labels)
    return smooth_ece_from_confidence(conf, hit, sigma)[0]


View = Literal["summary", "interval", "shift", "calibrators", "ablation"]
"""Where a metric is shown: the report's summary tables (and the terminal's), the per-run
bootstrap intervals stored with every run, the dataset-shift tables, the method x calibrator
table, and the ablation plots."""


@dataclass(frozen=True)
class MetricInfo:
    """One row of the metric table: everything calibench says about a metric in one place."""

    name: str
    label: str
    """Short column header (ECE, AdaECE, ...)."""
    description: str
    unit: Literal["percent", "plain"]
    """"percent": a fraction shown times 100; "plain": shown as it is."""
    lower_is_better: bool
    binning: str | None
    """The bins of a binned estimator (docs/metrics.md), None for an unbinned one."""
    resampled: bool
    """Whether :mod:`calibench.evaluation.bootstrap` resamples it from counts (intervals and
    paired bootstraps over test samples)."""
    views: frozenset[View]
    source: str
    """The paper that defines it, for the glossary."""


EW, EM = "equal-width", "equal-mass"
# fmt: off
METRIC_TABLE: tuple[MetricInfo, ...] = (
    # name, label, description; unit, lower_is_better, binning, resampled; views, source
    MetricInfo("acc", "Acc", "top-1 accuracy",
               "percent", False, None, True,
               frozenset({"summary", "shift", "calibrators", "ablation"}), ""),
    MetricInfo("nll", "NLL", "negative log-likelihood",
               "plain", True, None, True,
               frozenset({"summary", "interval", "shift", "calibrators"}),
               "Quinonero-Candela et al. 2006"),
    MetricInfo("brier", "Brier", "Brier score (sum over classes)",
               "plain", True, None, True,
               frozenset(), "Brier 1950"),
    MetricInfo("ece", "ECE", "expected calibration error, equal-width bins",
               "percent", True, EW, True,
               frozenset({"summary", "interval", "shift", "calibrators", "ablation"}),
               "Naeini et al. 2015; Guo et al. 2017"),
    MetricInfo("adaece", "AdaECE", "adaptive ECE, equal-mass bins",
               "percent", True, EM, True,
               frozenset({"summary", "interval", "shift", "calibrators"}),
               "Nguyen and O'Connor 2015; Mukhoti et al. 2020"),
    MetricInfo("cece", "CECE", "classwise ECE, equal-width bins",
               "percent", True, EW, True,
               frozenset({"summary"}), "Kull et al. 2019"),
    MetricInfo("mce", "MCE", "maximum calibration error, equal-width bins",
               "percent", True, EW, True,
               frozenset(), "Naeini et al. 2015"),
    MetricInfo("smece", "smECE", "smooth ECE, reflected Gaussian kernel",
               "percent", True, None, False,
               frozenset({"summary", "calibrators"}), "Blasiok and Nakkiran 2023"),
    MetricInfo("dece_l2", "dECE-L2", "debiased L2 calibration error, equal-mass bins",
               "percent", True, "split equal-mass", False,
               frozenset(), "Kumar, Liang and Ma 2019"),
    MetricInfo("ks", "KS", "Kolmogorov-Smirnov calibration error",
               "percent", True, None, False,
               frozenset(), "Gupta et al. 2021"),
    MetricInfo("oe", "OE", "over-confidence part of ECE",
               "percent", True, EW, False,
               frozenset(), "Thulasidasan et al. 2019"),
    MetricInfo("ue", "UE", "under-confidence part of ECE",
               "percent", True, EW, False,
               frozenset(), "Thulasidasan et al. 2019"),
    MetricInfo("aurc", "AURC", "area under the risk-coverage curve",
               "percent", True, None, False,
               frozenset(), "Geifman et al. 2019"),
)
# fmt: on
"""THE metric table: every metric calibench computes, in the order of every table and record."""

METRIC_INFO: dict[str, MetricInfo] = {m.name: m for m in METRIC_TABLE}
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_INFO)


def metrics_in(view: View) -> tuple[str, ...]:
    """The metrics shown in ``view``, in table order."""
    return tuple(m.name for m in METRIC_TABLE if view in m.views)


def resampled_metrics() -> tuple[str, ...]:
    """The metrics :mod:`calibench.evaluation.bootstrap` can resample, in table order."""
    return tuple(m.name for m in METRIC_TABLE if m.resampled)


def is_lower_better(metric: str) -> bool:
    """Direction of a metric by name: accuracy and OOD AUROC are higher-is-better; nll, brier and
    the calibration errors are lower-is-better. A ``_ts`` suffix (after temperature scaling) keeps
    the direction. Any other name is an error: pass ``lower_is_better`` explicitly."""
    base = metric.removesuffix("_ts")
    if base.startswith("ood_") and "auroc" in base:
        return False
    if base in METRIC_INFO:
        return METRIC_INFO[base].lower_is_better
    raise CalibenchError(
        f"calibench does not know whether lower or higher {metric!r} is better. Pass "
        f"lower_is_better explicitly, or use one of {', '.join(METRIC_INFO)} (optionally with "
        "_ts)."
    )


def _check_predictions(logits: np.ndarray, labels: np.ndarray) -> None:
    if logits.ndim != 2 or len(logits) == 0:
        raise CalibenchError(
            f"metrics need logits of shape (N, K) with N >= 1, got shape {logits.shape}"
        )
    if labels.shape != (len(logits),) or not np.issubdtype(labels.dtype, np.integer):
        raise CalibenchError(
            f"metrics need one integer label per row of logits: got labels of shape "
            f"{labels.shape} and dtype {labels.dtype} for {len(logits)} rows"
        )
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise CalibenchError(
            f"labels must lie in 0..{logits.shape[1] - 1} (one per logit column), found "
            f"{labels.min()}..{labels.max()}"
        )


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Every metric of METRIC_NAMES for one set of logits, in that order (docs/metrics.md)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    _check_predictions(logits, labels)
    probs = softmax(logits)
    oe, ue = over_under_confidence(probs, labels, n_bins)
    return {
        "acc": accuracy(probs, labels),
        "nll": nll(logits, labels),
        "brier": brier(probs, labels),
        "ece": ece(probs, labels, n_bins),
        "adaece": adaece(probs, labels, n_bins),
        "cece": cece(probs, labels, n_bins),
        "mce": mce(probs, labels, n_bins),
        "smece": smooth_ece(probs, labels),
        "dece_l2": debiased_l2_ce(probs, labels, n_bins),
        "ks": ks_error(probs, labels),
        "oe": oe,
        "ue": ue,
        "aurc": aurc(probs, labels),
    }
