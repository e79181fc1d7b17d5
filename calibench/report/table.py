"""What the report's tables share: which summary columns are metrics, their labels and units,
and the marks of the best value per column (docs/report.md, "Tables")."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from calibench.errors import CalibenchError
from calibench.evaluation.metrics import METRIC_INFO, METRIC_TABLE, is_lower_better

LABELS = {**{m.name: m.label for m in METRIC_TABLE}, "temperature": "T"}
GROUP = ["dataset", "backbone"]
Marks = dict[str, pd.Series]
"""Per metric column, a Series on the summary's index holding "best", "tied" or ""."""


def metric_columns(summary: pd.DataFrame, ood: bool | None = None) -> list[str]:
    """Columns of a summary that hold a metric's mean (those with a ``<name>_std`` partner),
    in table order; ``ood`` True keeps only ``ood_*`` columns, False drops them."""
    columns = [c for c in summary.columns if f"{c}_std" in summary.columns]
    if ood is None:
        return columns
    return [c for c in columns if c.startswith("ood_") == ood]


def is_percent(column: str) -> bool:
    """Accuracy and the calibration errors are shown in percent (metrics.METRIC_INFO);
    everything else as is."""
    info = METRIC_INFO.get(column.removesuffix("_ts"))
    return info is not None and info.unit == "percent"


def label(column: str) -> str:
    """A readable header: ``ece_ts`` -> ``ECE (TS)``; unknown names stay as they are."""
    base = column.removesuffix("_ts")
    text = LABELS.get(base, base)
    return f"{text} (TS)" if column.endswith("_ts") and base != column else text


def fmt(value: float, column: str) -> str:
    """A value as the tables show it: percent with 2 decimals, or 3 decimals."""
    if pd.isna(value):
        return "-"
    return f"{100 * value:.2f}" if is_percent(column) else f"{value:.3f}"


def direction(column: str) -> bool | None:
    """True when lower is better, False when higher is, None when it has no direction (T)."""
    try:
        return is_lower_better(column)
    except CalibenchError:
        return None


def best_marks(summary: pd.DataFrame, columns: Sequence[str] | None = None) -> Marks:
    """Marks of the numerically best mean of each metric column within each (dataset,
    backbone): "best" on it, or "tied" on every row sharing the best mean. Columns without a
    direction get no marks. A caller with significance tests passes its own :data:`Marks`
    (e.g. from :func:`calibench.evaluation.compare.mark_best`) instead."""
    marks: Marks = {}
    for column in metric_columns(summary) if columns is None else columns:
        lower = direction(column)
        series = pd.Series("", index=summary.index, dtype=object)
        if lower is not None:
            for _, group in summary.groupby(GROUP, sort=False):
                values = group[column].dropna()
                if len(values) < 2:
                    continue
                best = values.min() if lower else values.max()
                winners = values.index[values == best]
                series[winners] = "best" if len(winners) == 1 else "tied"
        marks[column] = series
    return marks
