"""ONE rule for every verdict and mark (docs/statistics.md): a table of k methods over their n
common seeds is a randomised block design (methods x seed blocks); every pair of methods gets a
t-test with the residual variance of the two-way ANOVA pooled over the table (df (k-1)(n-1)),
and Holm's (1979) step-down over the k(k-1)/2 pairs keeps the family-wise error rate at 5%
(calibench.evaluation.blocks). The best mean is "best" when it differs significantly from every
other method; otherwise it and every method not significantly worse are "tied". For k = 2 this
is the paired t-test over seeds, so `calibench compare A B` (:func:`compare_pair`) and the
report's marks (:func:`compare_table`) agree. One seed measures no training noise: no verdict,
no mark; the bootstrap over test samples is shown as information only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from calibench.errors import CalibenchError
from calibench.evaluation.blocks import block_anova, holm_adjust, mark_codes, pairwise_t
from calibench.evaluation.bootstrap import (
    N_RESAMPLES,
    RESAMPLED_METRICS,
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

ALPHA = 0.05
"""Family-wise error rate of the marks of one table column (and of `compare`)."""
MARKS = ("best", "tied", "")
ONE_SEED = "one seed: training noise is not measured"


@dataclass(frozen=True)
class PairTest:
    """Method a against method b within one table: ``difference`` = mean_a - mean_b over the
    table's common seeds, its pooled t statistic and p-value, Holm's adjusted p-value and
    whether the difference is significant at the table's family-wise level."""

    a: str
    b: str
    difference: float
    t: float
    p: float
    p_holm: float
    significant: bool


@dataclass(frozen=True)
class TableVerdict:
    """The verdict on one metric column of one table (one dataset and backbone)."""

    metric: str
    lower_is_better: bool
    marks: dict[str, str]
    """"best", "tied" or "" for every method of the input, valued or not."""
    seeds: tuple
    """The seeds common to every valued method: the only ones used."""
    means: dict[str, float]
    """Each compared method's mean over ``seeds``."""
    pairs: tuple[PairTest, ...]
    residual_sd: float | None
    df: int
    alpha: float
    note: str
    """One line: what was compared, over which seeds, and the outcome (or why there is none)."""

    @property
    def best(self) -> str | None:
        """The method marked best, or None."""
        return next((m for m, mark in self.marks.items() if mark == "best"), None)

    def pair(self, a: str, b: str) -> PairTest:
        """The test of ``a`` against ``b`` (difference a - b), in either stored order."""
        for test in self.pairs:
            if (test.a, test.b) == (a, b):
                return test
            if (test.a, test.b) == (b, a):
                return replace(test, a=a, b=b, difference=-test.difference, t=-test.t)
        raise CalibenchError(f"no test of {a!r} against {b!r} in this verdict.")


def _seed_table(
    runs: pd.DataFrame, metric: str, method_column: str, seed_column: str
) -> tuple[list[str], pd.DataFrame]:
    """All methods of ``runs`` (first-appearance order) and the seeds x methods values of the
    methods with a value, restricted to the seeds where every one of them has a value."""
    missing = {method_column, seed_column, metric} - set(runs.columns)
    if missing:
        raise CalibenchError(f"the runs table lacks column(s) {sorted(missing)}.")
    if runs.duplicated([method_column, seed_column]).any():
        raise CalibenchError(
            "the runs table has two runs of one method with the same seed: compare one "
            "configuration per method (one dataset and backbone at a time)."
        )
    methods = [str(m) for m in pd.unique(runs[method_column])]
    wide = runs.assign(**{method_column: runs[method_column].astype(str)}).pivot(
        index=seed_column, columns=method_column, values=metric
    )
    wide = wide[[m for m in methods if wide[m].notna().any()]].astype(np.float64)
    return methods, wide.dropna(axis=0, how="any").sort_index()


def compare_table(
    runs: pd.DataFrame,
    metric: str,
    lower_is_better: bool | None = None,
    *,
    method_column: str = "method",
    seed_column: str = "seed",
    alpha: float = ALPHA,
) -> TableVerdict:
    """THE rule for marks and verdicts on one column of one table (docs/statistics.md):
    ``runs`` has one row per run (method, seed, metric). Methods are compared on the seeds they
    all share, by pooled t-tests of a randomised block design (:func:`pairwise_t`) with Holm's
    step-down at family-wise ``alpha`` over all pairs (:func:`holm_adjust`), marked by
    :func:`mark_codes`. Fewer than two common seeds or two valued methods: no marks."""
    if not 0.0 < alpha < 1.0:
        raise CalibenchError(f"family-wise level alpha={alpha} is not in (0, 1); use e.g. 0.05.")
    lower = is_lower_better(metric) if lower_is_better is None else lower_is_better
    methods, table = _seed_table(runs, metric, method_column, seed_column)
    marks = dict.fromkeys(methods, "")
    seeds = tuple(table.index.tolist())
    names = [str(c) for c in table.columns]
    means = {m: float(table[m].mean()) for m in names} if seeds else {}
    empty = TableVerdict(metric, lower, marks, seeds, means, (), None, 0, alpha, "")
    if len(names) < 2:
        return _with_note(empty, f"{len(names)} method(s) with a value: nothing to compare")
    if len(seeds) < 2:
        why = ONE_SEED if seeds else f"no seed common to all {len(names)} methods"
        return _with_note(empty, f"{why}; no verdict")
    values = table.to_numpy().T
    difference, t, p, df = pairwise_t(values)
    adjusted = holm_adjust(p)
    codes = mark_codes(values.mean(axis=1), adjusted <= alpha, lower)
    marks.update({m: MARKS[2 - int(c)] for m, c in zip(names, codes, strict=True)})
    first, second = np.triu_indices(len(names), 1)
    pairs = tuple(
        PairTest(
            names[i],
            names[j],
            float(difference[q]),
            float(t[q]),
            float(p[q]),
            float(adjusted[q]),
            bool(adjusted[q] <= alpha),
        )
        for q, (i, j) in enumerate(zip(first, second, strict=True))
    )
    sd = float(np.sqrt(block_anova(values)[1]))
    verdict = TableVerdict(metric, lower, marks, seeds, means, pairs, sd, df, alpha, "")
    return _with_note(verdict, _outcome(verdict))


def _with_note(verdict: TableVerdict, note: str) -> TableVerdict:
    return replace(verdict, note=note)


def _outcome(verdict: TableVerdict) -> str:
    k, seeds = len(verdict.means), ", ".join(map(str, verdict.seeds))
    tied = [m for m, mark in verdict.marks.items() if mark == "tied"]
    result = f"{verdict.best} best" if verdict.best else f"tied for best: {', '.join(tied)}"
    return (
        f"{k} methods over seeds {seeds}; pooled residual sd {verdict.residual_sd:.4g} "
        f"(df {verdict.df}); Holm over {len(verdict.pairs)} pair(s) at family-wise "
        f"{100 * verdict.alpha:g}%: {result}"
    )


def seed_interval(differences: Sequence[float], level: float = 1 - ALPHA) -> Interval | None:
    """Student t interval of the mean per-seed difference d: mean(d) ± t_{(1+level)/2, n-1} ·
    sd(d) / sqrt(n), sd with ddof 1 (Student 1908). None with fewer than two seeds."""
    _check_level(level)
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return None
    half = stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def _fmt_interval(interval: Interval | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.4g}, {interval[1]:.4g}]"


@dataclass(frozen=True)
class PairedComparison:
    """Method A against method B on one metric over their common seeds: :func:`compare_table`
    with k = 2 (the paired t-test over seeds), differences A - B. ``verdict`` is "A better",
    "B better", "tied", or "n/a" with one seed; ``bootstrap_interval`` (test-sample noise of
    the same mean difference) is information only, never part of the verdict."""

    metric: str
    names: tuple[str, str]
    seeds: tuple
    n_seeds: int
    mean_diff: float
    seed_interval: Interval | None
    p_value: float | None
    verdict: str
    bootstrap_interval: Interval | None
    lower_is_better: bool
    level: float
    note: str

    @property
    def winner(self) -> str | None:
        """The name of the better method, or None when tied or without a verdict."""
        return {"A better": self.names[0], "B better": self.names[1]}.get(self.verdict)

    def describe(self) -> str:
        """One line: the difference, its interval over seeds, the verdict, and the bootstrap
        over test samples as information."""
        a, b = self.names
        pct = f"{100 * self.level:g}%"
        direction = "lower" if self.lower_is_better else "higher"
        if self.verdict == "n/a":
            outcome = f"n/a ({ONE_SEED})"
        else:
            p = f"paired t-test p {self.p_value:.3g}; "
            outcome = p + (f"{self.winner} better" if self.winner else "tied")
        return (
            f"{self.metric}: {a} - {b} = {self.mean_diff:.4g} over seeds "
            f"{', '.join(map(str, self.seeds))}; {pct} t-interval over seeds "
            f"{_fmt_interval(self.seed_interval)}; {direction} is better: {outcome}; "
            f"information only: {pct} bootstrap over test samples "
            f"{_fmt_interval(self.bootstrap_interval)}"
        )


def paired_comparison(
    metric: Metric,
    a: Sequence[float],
    b: Sequence[float],
    *,
    lower_is_better: bool | None = None,
    names: tuple[str, str] = ("A", "B"),
    seeds: Sequence | None = None,
    level: float = 1 - ALPHA,
    logits: dict | None = None,
) -> PairedComparison:
    """Compare methods A and B by THE rule (:func:`compare_table` with k = 2): ``a[s]`` and
    ``b[s]`` are the metric of ``seeds[s]`` (default 0, 1, ...). ``logits`` (optional:
    ``a_logits``, ``b_logits``, ``labels`` and optionally ``n_resamples``, ``seed``, ``n_bins``)
    adds the paired bootstrap over test samples as information; the logits must be those that
    produced the values (for a ``_ts`` metric, test logits / T). See docs/statistics.md."""
    name = _metric_name(metric)
    lower = is_lower_better(name) if lower_is_better is None else lower_is_better
    a_values, b_values = _paired_values(name, a, b, names)
    seeds = tuple(range(len(a_values))) if seeds is None else tuple(seeds)
    if len(seeds) != len(a_values):
        raise CalibenchError(f"got {len(a_values)} values per method but {len(seeds)} seeds.")
    runs = pd.DataFrame(
        {
            "method": [names[0]] * len(seeds) + [names[1]] * len(seeds),
            "seed": [*seeds, *seeds],
            name: np.r_[a_values, b_values],
        }
    )
    table = compare_table(runs, name, lower, alpha=1 - level)
    two_seeds = len(seeds) >= 2
    if not two_seeds:
        verdict = "n/a"
    elif table.best is None:
        verdict = "tied"
    else:
        verdict = "A better" if table.best == names[0] else "B better"
    boot = None if logits is None else _bootstrap(metric, a_values, b_values, names, level, logits)
    return PairedComparison(
        metric=name,
        names=names,
        seeds=seeds,
        n_seeds=len(seeds),
        mean_diff=float(np.mean(a_values - b_values)),
        seed_interval=seed_interval(a_values - b_values, level),
        p_value=table.pair(*names).p if two_seeds else None,
        verdict=verdict,
        bootstrap_interval=boot,
        lower_is_better=lower,
        level=level,
        note=table.note,
    )


def _paired_values(
    name: str, a: Sequence[float], b: Sequence[float], names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    a_values = np.asarray(a, dtype=np.float64)
    b_values = np.asarray(b, dtype=np.float64)
    if a_values.shape != b_values.shape or a_values.ndim != 1 or len(a_values) == 0:
        raise CalibenchError(
            f"got {a_values.size} values for A and {b_values.size} for B: pass one {name} value "
            "per seed for each method, paired by seed in the same order."
        )
    if not (np.all(np.isfinite(a_values)) and np.all(np.isfinite(b_values))):
        raise CalibenchError(f"a {name} value is missing or not finite; finish or drop that run.")
    if names[0] == names[1]:
        raise CalibenchError(f"both methods are called {names[0]!r}: compare two methods.")
    return a_values, b_values


def _bootstrap(
    metric: Metric,
    a_values: np.ndarray,
    b_values: np.ndarray,
    names: tuple[str, str],
    level: float,
    logits: dict,
) -> Interval:
    """The paired bootstrap interval over test samples of mean_s [m(A_s) - m(B_s)], after
    checking that the logits reproduce the values."""
    unknown = set(logits) - {"a_logits", "b_logits", "labels", "n_resamples", "seed", "n_bins"}
    if unknown or not {"a_logits", "b_logits", "labels"} <= set(logits):
        raise CalibenchError(
            "a bootstrap over test samples needs a_logits, b_logits and labels together (and "
            f"optionally n_resamples, seed, n_bins); got {sorted(logits)}."
        )
    n_bins = logits.get("n_bins", N_BINS)
    for who, values, z in ((names[0], a_values, logits["a_logits"]),
                           (names[1], b_values, logits["b_logits"])):  # fmt: skip
        if len(z) != len(values):
            raise CalibenchError(
                f"got {len(values)} seeds of values but logits for {len(z)}: pass one test "
                "logits array per seed, in the order of the values."
            )
        per_seed = _labels_per_seed(logits["labels"], len(values))
        _check_values_match(metric, values, z, per_seed, n_bins, who)
    return paired_bootstrap_interval(
        metric, logits["a_logits"], logits["b_logits"], logits["labels"],
        logits.get("n_resamples", N_RESAMPLES), level, logits.get("seed", 0), n_bins,
    )  # fmt: skip


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


def compare_pair(
    table: pd.DataFrame,
    runs: Sequence[tuple[str, RunSpec, dict[str, np.ndarray]]],
    a: str,
    b: str,
    metric: str,
) -> list[tuple[str, str, PairedComparison]]:
    """``(dataset, backbone, comparison of a against b)`` for every dataset/backbone where both
    methods have runs, on their common seeds; ``table`` and ``runs`` as
    :func:`calibench.report.build.collect` returns them."""
    _check_pair_request(table, a, b, metric)
    logits = {spec.run_id: data for _, spec, data in runs}
    out = []
    for (dataset, backbone), group in table.groupby(["dataset", "backbone"]):
        one = _one_configuration(group, a, dataset, backbone)
        other = _one_configuration(group, b, dataset, backbone)
        seeds = sorted(set(one.index) & set(other.index))
        if not seeds:
            continue
        extra = None
        if metric.removesuffix("_ts") in RESAMPLED_METRICS:
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
            seeds=seeds,
            logits=extra,
        )
        out.append((dataset, backbone, comparison))
    if not out:
        raise CalibenchError(f"{a} and {b} share no dataset, backbone and seed in this store.")
    return out


def _check_pair_request(table: pd.DataFrame, a: str, b: str, metric: str) -> None:
    if metric not in _metrics(table):
        raise CalibenchError(f"unknown metric {metric!r}. Valid: {', '.join(_metrics(table))}.")
    known = set(table["method"])
    for name in (a, b):
        if name not in known:
            raise CalibenchError(
                f"no complete run of method {name!r} in this store. Methods: "
                f"{', '.join(sorted(known))}."
            )


def _one_configuration(group: pd.DataFrame, name: str, dataset: str, backbone: str):
    rows = group[group["method"] == name].set_index("seed")
    if rows.index.duplicated().any():
        raise CalibenchError(
            f"{name} has several configurations on {dataset}/{backbone}; compare one "
            "configuration per method (keep one in the store or use another --output)."
        )
    return rows


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
