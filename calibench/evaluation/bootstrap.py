"""Bootstrap intervals over test samples: every resampled metric computed from resampling counts
(the softmax done once), a percentile interval of one run's metric and a paired interval of the
difference of two methods over seeds (docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse, stats
from scipy.special import log_softmax

from calibench.errors import CalibenchError
from calibench.evaluation.metrics import (
    N_BINS,
    equal_width_edges,
    resampled_metrics,
    softmax,
    top_label,
)

LEVEL = 0.95
N_RESAMPLES = 1000
RESAMPLED_METRICS = resampled_metrics()
_BATCH = 100

Interval = tuple[float, float]
Metric = str | Callable[[np.ndarray, np.ndarray], float]
ResampledMetric = Callable[[np.ndarray], np.ndarray]


def _metric_name(metric: Metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise CalibenchError(f"confidence level {level} is not in (0, 1); use e.g. 0.95.")


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n test samples appears in each row of ``indices`` (R, n)."""
    indices = np.atleast_2d(indices)
    rows = len(indices)
    flat = (indices + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _membership(values: np.ndarray, hits: np.ndarray, edges: np.ndarray) -> sparse.csr_array:
    """Sparse (N, 3·G·B) matrix whose product with bootstrap counts gives, per group g of G
    reliability problems and per bin b, the count, the confidence sum and the hit sum.
    ``values`` and ``hits`` are (N, G); bins are (lo, hi], the first closed below."""
    n, groups = values.shape
    n_bins = len(edges) - 1
    bins = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, n_bins - 1)
    column = (np.arange(groups) * n_bins + bins).ravel()
    width = groups * n_bins
    rows = np.repeat(np.arange(n), groups)
    data = np.concatenate([np.ones(n * groups), values.ravel(), hits.ravel()])
    columns = np.concatenate([column, column + width, column + 2 * width])
    return sparse.csr_array((data, (np.tile(rows, 3), columns)), shape=(n, 3 * width))


def _binned_metric(values: np.ndarray, hits: np.ndarray, n_bins: int, kind: str) -> ResampledMetric:
    """ECE (mean over groups) or MCE of bootstrap counts for fixed equal-width bins."""
    n, groups = values.shape
    members = _membership(values, hits, equal_width_edges(n_bins)).T.tocsr()

    def of_counts(counts: np.ndarray) -> np.ndarray:
        sums = (members @ counts.T).T.reshape(len(counts), 3, groups, n_bins)
        count, conf, hit = sums[:, 0], sums[:, 1], sums[:, 2]
        if kind == "ece":
            return np.abs(hit - conf).sum(axis=2).mean(axis=1) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps = np.where(count > 0, np.abs(hit - conf) / count, -np.inf)
        return np.maximum(gaps.max(axis=(1, 2)), 0.0)

    return of_counts


def _adaptive_ece(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> ResampledMetric:
    """AdaECE of bootstrap counts: the equal-mass edges are recomputed on every resample, exactly
    as ``np.interp(linspace(0, N, B + 1), arange(N), sorted resampled confidences)``."""
    n = len(conf)
    order = np.argsort(conf, kind="stable")
    conf_s, hit_s = conf[order], hit[order]
    t = np.linspace(0, n, n_bins + 1)[1:-1]
    below = np.minimum(np.floor(t).astype(np.int64), n - 1)
    above = np.minimum(below + 1, n - 1)
    fraction = t - below
    on_point = (fraction == 0) | (below == n - 1)

    def of_counts(counts: np.ndarray) -> np.ndarray:
        rows = len(counts)
        c = counts[:, order]
        cum = np.cumsum(c, axis=1)
        offset = (n + 1) * np.arange(rows)[:, None]
        flat = (cum + offset).ravel()

        def sorted_resample_at(position: np.ndarray) -> np.ndarray:
            index = np.searchsorted(flat, (position[None, :] + offset).ravel(), side="right")
            return conf_s[index.reshape(rows, -1) - n * np.arange(rows)[:, None]]

        y0, y1 = sorted_resample_at(below), sorted_resample_at(above)
        edges = np.where(on_point, y0, (y1 - y0) * fraction + y0)
        bounds = np.searchsorted(conf_s, edges.ravel(), side="right").reshape(rows, -1)
        bounds = np.concatenate(
            [np.zeros((rows, 1), np.int64), bounds, np.full((rows, 1), n)], axis=1
        )
        zero = np.zeros((rows, 1))
        cum_conf = np.concatenate([zero, np.cumsum(c * conf_s, axis=1)], axis=1)
        cum_hit = np.concatenate([zero, np.cumsum(c * hit_s, axis=1)], axis=1)
        gap = np.take_along_axis(cum_hit - cum_conf, bounds, axis=1)
        return np.abs(np.diff(gap, axis=1)).sum(axis=1) / n

    return of_counts


def _of_counts(name: str, logits: np.ndarray, labels: np.ndarray, n_bins: int) -> ResampledMetric:
    base = name.removesuffix("_ts")
    if base not in RESAMPLED_METRICS:
        raise CalibenchError(
            f"no bootstrap for metric {name!r}; choose from {', '.join(RESAMPLED_METRICS)} "
            "(optionally with _ts, given test logits / T) or pass a function "
            "metric(logits, labels) -> float."
        )
    probs = softmax(logits)
    n = len(labels)
    conf, hit = top_label(probs, labels)
    if base in ("acc", "nll", "brier"):
        if base == "acc":
            per_sample = hit
        elif base == "nll":
            per_sample = -log_softmax(np.asarray(logits, np.float64), axis=1)[np.arange(n), labels]
        else:
            per_sample = np.sum((probs - np.eye(probs.shape[1])[labels]) ** 2, axis=1)
        return lambda counts: counts @ per_sample / n
    if base == "adaece":
        return _adaptive_ece(conf, hit, n_bins)
    if base == "cece":
        onehot = (labels[:, None] == np.arange(probs.shape[1])).astype(np.float64)
        return _binned_metric(probs, onehot, n_bins, "ece")
    return _binned_metric(conf[:, None], hit[:, None], n_bins, base)


def resample_metric(
    metric: Metric, logits: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> ResampledMetric:
    """The metric of each bootstrap resample: maps test-sample indices (R, N) to R values, where
    row r is ``metric(logits[indices[r]], labels[indices[r]])``.

    ``metric`` is a name from RESAMPLED_METRICS (definitions as in
    calibench.evaluation.metrics; a ``_ts`` suffix means the logits given are already divided
    by T), computed from resampling counts with the softmax done once; or any function
    ``metric(logits, labels) -> float``, called per row."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise CalibenchError(
            f"logits of shape {logits.shape} do not match {len(labels)} labels: pass test logits "
            "(N, K) with their N labels."
        )
    n = len(labels)
    if not isinstance(metric, str):
        return lambda indices: np.array(
            [metric(logits[row], labels[row]) for row in np.atleast_2d(indices)], dtype=np.float64
        )
    of_counts = _of_counts(metric, logits, labels, n_bins)
    return lambda indices: of_counts(_counts(indices, n))


def _percentile_bootstrap(
    statistic: Callable[..., np.ndarray],
    sizes: Sequence[int],
    n_resamples: int,
    level: float,
    seed: int,
) -> Interval:
    _check_level(level)
    if n_resamples < 2:
        raise CalibenchError(f"n_resamples={n_resamples} is too few; use e.g. 1000.")
    result = stats.bootstrap(
        tuple(np.arange(size) for size in sizes),
        lambda *indices, axis=-1: statistic(*indices),
        n_resamples=n_resamples,
        batch=_BATCH,
        vectorized=True,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def bootstrap_interval(
    metric: Metric,
    logits: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> Interval:
    """Percentile bootstrap interval of a metric over test samples (Efron and Tibshirani 1993,
    ch. 13): the (1 - level)/2 and (1 + level)/2 quantiles of the metric over ``n_resamples``
    resamples of the N test samples drawn with replacement. Deterministic for a seed.
    See docs/statistics.md."""
    resampled = resample_metric(metric, logits, labels, n_bins)
    return _percentile_bootstrap(resampled, [len(labels)], n_resamples, level, seed)


def paired_bootstrap_interval(
    metric: Metric,
    a_logits: Sequence[np.ndarray],
    b_logits: Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> Interval:
    """Percentile bootstrap interval of mean_s [m(A_s) - m(B_s)] over seeds s, resampling test
    samples: A and B of a seed always see the same resampled indices. When every seed has the
    same test labels (one shared test set) all seeds share the indices too; otherwise each seed's
    test set is resampled independently. See docs/statistics.md."""
    if len(a_logits) != len(b_logits) or len(a_logits) == 0:
        raise CalibenchError(
            f"got logits for {len(a_logits)} seeds of A and {len(b_logits)} of B: pass one test "
            "logits array per seed for both methods, in the same seed order."
        )
    per_seed = _labels_per_seed(labels, len(a_logits))
    pairs = [
        (resample_metric(metric, a, y, n_bins), resample_metric(metric, b, y, n_bins))
        for a, b, y in zip(a_logits, b_logits, per_seed, strict=True)
    ]
    shared = all(
        len(y) == len(per_seed[0]) and np.array_equal(y, per_seed[0]) for y in per_seed[1:]
    )
    if shared:

        def mean_difference(indices: np.ndarray) -> np.ndarray:
            return np.mean([a(indices) - b(indices) for a, b in pairs], axis=0)

        return _percentile_bootstrap(mean_difference, [len(per_seed[0])], n_resamples, level, seed)

    def mean_difference_per_seed(*indices: np.ndarray) -> np.ndarray:
        return np.mean([a(i) - b(i) for (a, b), i in zip(pairs, indices, strict=True)], axis=0)

    sizes = [len(y) for y in per_seed]
    return _percentile_bootstrap(mean_difference_per_seed, sizes, n_resamples, level, seed)


def _labels_per_seed(labels: np.ndarray | Sequence[np.ndarray], n_seeds: int) -> list[np.ndarray]:
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        return [labels] * n_seeds
    per_seed = [np.asarray(y) for y in labels]
    if len(per_seed) != n_seeds:
        raise CalibenchError(
            f"got labels for {len(per_seed)} seeds but logits for {n_seeds}: pass one label "
            "array shared by all seeds, or one per seed."
        )
    return per_seed
