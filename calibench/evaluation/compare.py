"""Comparisons of methods over seeds: the paired t-interval of two methods, the verdict rule, the
comparison of every pair of a table and its best/tied marks (docs/statistics.md). A difference
is always A - B; whether lower or higher is better is a parameter, or looked up by metric name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from calibench.errors import CalibenchError
from calibench.evaluation.bootstrap import (
    LEVEL,
    N_RESAMPLES,
    RESAMPLED_METRICS,
    WILCOXON_MIN_SEEDS,
    Interval,
    Metric,
    _check_level,
    _labels_per_seed,
    _metric_name,
    paired_bootstrap_interval,
    resample_metric,
)
from calibench.evaluation.metrics import N_BINS, is_lower_better
from calibench.spec import RunSpec


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


def compare_pair(
    table: pd.DataFrame,
    runs: list[tuple[str, RunSpec, dict]],
    a: str,
    b: str,
    metric: str,
) -> list[tuple[str, str, PairedComparison]]:
    """``(dataset, backbone, comparison of a against b)`` for every dataset/backbone where both
    methods have runs with common seeds; ``table`` and ``runs`` as
    :func:`calibench.report.build.collect` returns them."""
    if metric not in table.columns:
        raise CalibenchError(f"unknown metric {metric!r}. Valid: {', '.join(_metrics(table))}.")
    known = set(table["method"])
    for name in (a, b):
        if name not in known:
            raise CalibenchError(
                f"no complete run of method {name!r} in this store. Methods: "
                f"{', '.join(sorted(known))}."
            )
    logits = {spec.run_id: data for _, spec, data in runs}
    out = []
    for (dataset, backbone), group in table.groupby(["dataset", "backbone"]):
        one = group[group["method"] == a].set_index("seed")
        other = group[group["method"] == b].set_index("seed")
        for name, rows in ((a, one), (b, other)):
            if rows.index.duplicated().any():
                raise CalibenchError(
                    f"{name} has several configurations on {dataset}/{backbone}; compare one "
                    "configuration per method (keep one in the store or use another --output)."
                )
        seeds = sorted(set(one.index) & set(other.index))
        if not seeds:
            continue
        extra = {}
        base = metric.removesuffix("_ts")
        if base in RESAMPLED_METRICS:
            extra = {
                "a_logits": [_scaled(logits, one.loc[s], metric) for s in seeds],
                "b_logits": [_scaled(logits, other.loc[s], metric) for s in seeds],
                "labels": [logits[one.loc[s, "run_id"]]["test_labels"] for s in seeds],
                "n_bins": int(one["n_bins"].iloc[0]),
            }
        comparison = paired_comparison(
            metric,
            one.loc[seeds, metric].to_numpy(),
            other.loc[seeds, metric].to_numpy(),
            names=(a, b),
            **extra,
        )
        out.append((dataset, backbone, comparison))
    if not out:
        raise CalibenchError(f"{a} and {b} share no dataset, backbone and seed in this store.")
    return out


def _scaled(logits: dict, row: pd.Series, metric: str) -> np.ndarray:
    z = logits[row["run_id"]]["test_logits"].astype(np.float64)
    return z / row["temperature"] if metric.endswith("_ts") else z


def _metrics(table: pd.DataFrame) -> list[str]:
    skip = {"seed", "epochs", "n_bins", "n_test", "temperature"}
    return [
        c
        for c in table.columns
        if table[c].dtype.kind == "f" and c not in skip and not c.endswith(("_low", "_high"))
    ]
