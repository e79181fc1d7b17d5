"""Statistics for comparing results: bootstrap intervals over test samples, paired comparisons of
two methods over seeds, and "best / tied" marks for report tables.

Pure functions on arrays and data frames; the definitions, the verdict rule and their sources are
in docs/statistics.md. A difference is always A - B; whether lower or higher is better is a
parameter (or looked up by metric name with :func:`is_lower_better`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.special import log_softmax

from calibench.errors import CalibenchError
from calibench.metrics import METRIC_INFO, N_BINS, equal_width_edges, softmax, top_label

LEVEL = 0.95
N_RESAMPLES = 1000
WILCOXON_MIN_SEEDS = 6
VERDICTS = ("A better", "B better", "tied")
RESAMPLED_METRICS = ("acc", "nll", "brier", "ece", "adaece", "cece", "mce")
_BATCH = 100

Interval = tuple[float, float]
Metric = str | Callable[[np.ndarray, np.ndarray], float]
ResampledMetric = Callable[[np.ndarray], np.ndarray]


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

    ``metric`` is a name from RESAMPLED_METRICS (definitions as in calibench.metrics; a ``_ts``
    suffix means the logits given are already divided by T), computed from resampling counts with
    the softmax done once; or any function ``metric(logits, labels) -> float``, called per row."""
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


def seed_interval(differences: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Student t interval of the mean per-seed difference d: mean(d) ± t_{(1+level)/2, n-1} ·
    sd(d) / sqrt(n), sd with ddof 1 (Student 1908). None with fewer than two seeds."""
    _check_level(level)
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return None
    half = stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def wilcoxon_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the per-seed differences a - b (Wilcoxon 1945),
    as scipy.stats.wilcoxon computes it. None with fewer than WILCOXON_MIN_SEEDS = 6 seeds: the
    smallest exact two-sided p-value of n pairs is 2 / 2^n, above 0.05 for n <= 5."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < WILCOXON_MIN_SEEDS:
        return None
    if not np.any(d):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def verdict(intervals: Sequence[Interval | None], lower_is_better: bool) -> str:
    """ "A better" or "B better" when every available interval of A - B excludes 0 on the same
    side; "tied" otherwise, including when no interval is available. See docs/statistics.md."""
    available = [i for i in intervals if i is not None]
    if not available:
        return "tied"
    if all(high < 0 for _, high in available):
        return "A better" if lower_is_better else "B better"
    if all(low > 0 for low, _ in available):
        return "B better" if lower_is_better else "A better"
    return "tied"


def _fmt_interval(interval: Interval | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.4g}, {interval[1]:.4g}]"


@dataclass(frozen=True)
class PairedComparison:
    """Method A against method B on one metric over the same seeds; differences are A - B."""

    metric: str
    n_seeds: int
    mean_diff: float
    seed_interval: Interval | None
    bootstrap_interval: Interval | None
    p_value: float | None
    verdict: str
    lower_is_better: bool
    level: float = LEVEL
    names: tuple[str, str] = ("A", "B")

    @property
    def winner(self) -> str | None:
        """The name of the better method, or None when tied."""
        return {"A better": self.names[0], "B better": self.names[1]}.get(self.verdict)

    def swapped(self) -> PairedComparison:
        """The same comparison seen as B against A."""

        def flip(interval: Interval | None) -> Interval | None:
            return None if interval is None else (-interval[1], -interval[0])

        return replace(
            self,
            mean_diff=-self.mean_diff,
            seed_interval=flip(self.seed_interval),
            bootstrap_interval=flip(self.bootstrap_interval),
            verdict={"A better": "B better", "B better": "A better"}.get(self.verdict, "tied"),
            names=(self.names[1], self.names[0]),
        )

    def describe(self) -> str:
        """One line: the difference, its intervals, the p-value and the verdict."""
        a, b = self.names
        pct = f"{100 * self.level:g}%"
        p = f"n/a (< {WILCOXON_MIN_SEEDS} seeds)" if self.p_value is None else f"{self.p_value:.3g}"
        direction = "lower" if self.lower_is_better else "higher"
        outcome = f"{self.winner} better" if self.winner else "tied"
        return (
            f"{self.metric}: {a} - {b} = {self.mean_diff:.4g} over {self.n_seeds} seed(s); "
            f"{pct} t-interval over seeds {_fmt_interval(self.seed_interval)}; "
            f"{pct} bootstrap over test samples {_fmt_interval(self.bootstrap_interval)}; "
            f"Wilcoxon p {p}; {direction} is better: {outcome}"
        )


def paired_comparison(
    metric: Metric,
    a: Sequence[float],
    b: Sequence[float],
    *,
    lower_is_better: bool | None = None,
    a_logits: Sequence[np.ndarray] | None = None,
    b_logits: Sequence[np.ndarray] | None = None,
    labels: np.ndarray | Sequence[np.ndarray] | None = None,
    names: tuple[str, str] = ("A", "B"),
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> PairedComparison:
    """Compare methods A and B trained over the same seeds: ``a[s]`` and ``b[s]`` are the metric
    of seed s. With per-seed test logits (and labels) the paired bootstrap interval over test
    samples is added; the logits must be those that produced the values (for a ``_ts`` metric,
    test logits / T). The verdict rule is :func:`verdict` over both intervals.
    See docs/statistics.md."""
    name = _metric_name(metric)
    if lower_is_better is None:
        lower_is_better = is_lower_better(name)
    a_values = np.asarray(a, dtype=np.float64)
    b_values = np.asarray(b, dtype=np.float64)
    if a_values.shape != b_values.shape or a_values.ndim != 1 or len(a_values) == 0:
        raise CalibenchError(
            f"got {a_values.size} values for A and {b_values.size} for B: pass one {name} value "
            "per seed for each method, paired by seed in the same order."
        )
    if not (np.all(np.isfinite(a_values)) and np.all(np.isfinite(b_values))):
        raise CalibenchError(f"a {name} value is missing or not finite; finish or drop that run.")
    differences = a_values - b_values
    interval = seed_interval(differences, level)
    boot = None
    if a_logits is not None or b_logits is not None:
        if a_logits is None or b_logits is None or labels is None:
            raise CalibenchError(
                "a bootstrap over test samples needs a_logits, b_logits and labels together."
            )
        if len(a_logits) != len(a_values):
            raise CalibenchError(
                f"got {len(a_values)} seeds of values but logits for {len(a_logits)}: pass one "
                "test logits array per seed, in the order of the values."
            )
        per_seed = _labels_per_seed(labels, len(a_values))
        _check_values_match(metric, a_values, a_logits, per_seed, n_bins, names[0])
        _check_values_match(metric, b_values, b_logits, per_seed, n_bins, names[1])
        boot = paired_bootstrap_interval(
            metric, a_logits, b_logits, labels, n_resamples, level, seed, n_bins
        )
    return PairedComparison(
        metric=name,
        n_seeds=len(differences),
        mean_diff=float(differences.mean()),
        seed_interval=interval,
        bootstrap_interval=boot,
        p_value=wilcoxon_p_value(a_values, b_values),
        verdict=verdict([interval, boot], lower_is_better),
        lower_is_better=lower_is_better,
        level=level,
        names=names,
    )


def _check_values_match(
    metric: Metric,
    values: np.ndarray,
    logits: Sequence[np.ndarray],
    labels: list[np.ndarray],
    n_bins: int,
    who: str,
) -> None:
    for s, (value, z, y) in enumerate(zip(values, logits, labels, strict=True)):
        full = float(resample_metric(metric, z, y, n_bins)(np.arange(len(y)))[0])
        if not np.isclose(full, value, rtol=1e-6, atol=1e-9):
            raise CalibenchError(
                f"{who}'s {_metric_name(metric)} of seed #{s} is {value:.6g} but its logits give "
                f"{full:.6g}: pass the logits that produced the values (for a _ts metric, test "
                "logits divided by that run's T)."
            )


def compare_methods(
    runs: pd.DataFrame,
    metric: str,
    lower_is_better: bool | None = None,
    *,
    method_column: str = "method",
    seed_column: str = "seed",
    level: float = LEVEL,
) -> dict[tuple[str, str], PairedComparison]:
    """Seed-level :func:`paired_comparison` of every ordered pair of methods in ``runs`` (one row
    per run: method, seed and the metric column), paired on the seeds both methods have. Pairs
    without a common seed are left out. Use one table per (dataset, backbone)."""
    if lower_is_better is None:
        lower_is_better = is_lower_better(metric)
    missing = {method_column, seed_column, metric} - set(runs.columns)
    if missing:
        raise CalibenchError(f"the runs table lacks column(s) {sorted(missing)}.")
    if runs.duplicated([method_column, seed_column]).any():
        raise CalibenchError(
            "the runs table has two runs of one method with the same seed: compare one "
            "configuration per method (one dataset and backbone at a time)."
        )
    wide = runs.pivot(index=seed_column, columns=method_column, values=metric)
    methods = list(wide.columns)
    comparisons: dict[tuple[str, str], PairedComparison] = {}
    for i, first in enumerate(methods):
        for second in methods[i + 1 :]:
            common = wide[[first, second]].dropna()
            if common.empty:
                continue
            comparison = paired_comparison(
                metric,
                common[first].to_numpy(),
                common[second].to_numpy(),
                lower_is_better=lower_is_better,
                names=(str(first), str(second)),
                level=level,
            )
            comparisons[(first, second)] = comparison
            comparisons[(second, first)] = comparison.swapped()
    return comparisons


def mark_best(
    summary: pd.DataFrame,
    metric: str,
    lower_is_better: bool,
    comparisons: Mapping[tuple[str, str], PairedComparison],
    method_column: str = "method",
) -> pd.Series:
    """Marks for one column of a summary table (one row per method, the metric's mean over seeds):
    "best" on the method with the best mean when it is better than every other method by the
    verdict rule; otherwise "tied" on it and on every method it is not better than; "" elsewhere.
    ``comparisons[(m1, m2)]`` compares m1 (as A) with m2 (as B), e.g. from :func:`compare_methods`;
    a missing pair counts as tied. Rows with no value, or a table of fewer than two methods with
    values, get "". Use one table per (dataset, backbone). See docs/statistics.md."""
    marks = pd.Series("", index=summary.index, dtype=object)
    if summary[method_column].duplicated().any():
        raise CalibenchError(
            "the summary has two rows for one method: mark one table per (dataset, backbone) "
            "with one configuration per method."
        )
    valued = summary[summary[metric].notna()]
    if len(valued) < 2:
        return marks
    leader_row = valued[metric].idxmin() if lower_is_better else valued[metric].idxmax()
    leader = valued.at[leader_row, method_column]

    def beats(other: str) -> bool:
        if (leader, other) in comparisons:
            return comparisons[(leader, other)].verdict == "A better"
        if (other, leader) in comparisons:
            return comparisons[(other, leader)].verdict == "B better"
        return False

    tied = [
        row
        for row in valued.index
        if row != leader_row and not beats(valued.at[row, method_column])
    ]
    if not tied:
        marks[leader_row] = "best"
    else:
        marks[[leader_row, *tied]] = "tied"
    return marks
