"""``calibench compare A B``: one pair of methods, paired over the seeds both were trained with,
per dataset and backbone (docs/statistics.md).

The t-interval over seeds and, for the metrics that can be resampled from logits, the paired
bootstrap over test samples both enter the verdict; the Wilcoxon signed-rank p-value is shown
where there are enough seeds for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibench.config import RunSpec
from calibench.errors import CalibenchError
from calibench.stats import RESAMPLED_METRICS, PairedComparison, paired_comparison


def compare_pair(
    table: pd.DataFrame,
    runs: list[tuple[str, RunSpec, dict]],
    a: str,
    b: str,
    metric: str,
) -> list[tuple[str, str, PairedComparison]]:
    """``(dataset, backbone, comparison of a against b)`` for every dataset/backbone where both
    methods have runs with common seeds; ``table`` and ``runs`` as :func:`calibench.report.collect`
    returns them."""
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
