"""The report's main tables as :class:`~calibench.report.table.Table` s: the summary of each
dataset and backbone (mean ± std over seeds, marked), its OOD table, every run with its
bootstrap intervals, and the glossary of every column (from the metric table)."""

from __future__ import annotations

import pandas as pd

from calibench.evaluation.metrics import METRIC_TABLE
from calibench.evaluation.record import INTERVAL_METRICS
from calibench.report.collect import KEYS, METRICS, SUMMARY
from calibench.report.marks import Marks, legend
from calibench.report.table import Cell, Row, Table, metric_column, text_column

GROUP = ["dataset", "backbone"]
EDGE_COLUMN = "temperature_at_edge"
"""A per-run column (when the record holds it) that is true where the fitted T lies on an edge
of its grid; such T cells carry :data:`EDGE_FLAG`."""
EDGE_FLAG = (
    "T lies on an edge of the reference grid 0.1..10 in at least one seed: the best temperature "
    "may lie outside the grid."
)
EDGE_RUN_FLAG = (
    "T lies on an edge of the reference grid 0.1..10: the best temperature may lie outside the "
    "grid."
)
TS_GROUP = "after temperature scaling"
UNITS = (
    "Accuracy and calibration errors in percent, NLL and Brier as they are; mean ± std over "
    "seeds; (TS): after temperature scaling, T fitted on the validation set."
)


def summary_metrics(summary: pd.DataFrame, ood: bool) -> list[str]:
    """The metric columns of a summary (those with a ``<name>_std`` partner), in table order:
    the summary view of the metric table with T and the ``_ts`` columns, or the OOD AUROCs."""
    if ood:
        return [c for c in summary.columns if c.startswith("ood_") and f"{c}_std" in summary]
    return [c for c in SUMMARY if c in summary.columns]


def _group_of(column: str) -> str:
    return TS_GROUP if column == "temperature" or column.endswith("_ts") else ""


def _at_edge(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose T lies on an edge of its grid (none when the records do not say)."""
    if EDGE_COLUMN not in runs.columns:
        return runs.iloc[:0]
    return runs[runs[EDGE_COLUMN].fillna(False).astype(bool)]


def summary_table(
    group: pd.DataFrame, columns: list[str], marks: Marks, runs: pd.DataFrame, title: str
) -> Table:
    """One dataset and backbone: method, epochs, seeds and each metric of ``columns`` as
    mean ± std with its mark; a T cell is flagged when a seed's T lies on a grid edge."""
    edge = set(_at_edge(runs)["config_id"])
    table_columns = [text_column("method")]
    table_columns += [text_column(k, right=True) for k in ("epochs", "seeds")]
    table_columns += [metric_column(c, _group_of(c)) for c in columns]
    rows = []
    for index, row in group.iterrows():
        cells = [Cell(row["method"]), Cell(int(row["epochs"])), Cell(int(row["seeds"]))]
        for column in columns:
            flag = EDGE_FLAG if column == "temperature" and row["config_id"] in edge else ""
            mark = marks[column][index] if column in marks else ""
            cells.append(Cell(row[column], row.get(f"{column}_std"), mark=mark, flag=flag))
        rows.append(Row(cells))
    key = "-".join(str(group.iloc[0][g]) for g in GROUP)
    return Table(title, table_columns, rows, key=key)


def summary_tables(
    summary: pd.DataFrame, marks: Marks, runs: pd.DataFrame, style: str, ood: bool = False
) -> list[Table]:
    """Per dataset and backbone, the summary table (or, with ``ood``, its OOD AUROC table,
    when there is one); captions hold the units and the marks' legend in ``style``."""
    tables = []
    for (dataset, backbone), group in summary.groupby(GROUP, sort=True):
        columns = [c for c in summary_metrics(summary, ood) if group[c].notna().any()]
        if not columns:
            continue
        members = runs[(runs["dataset"] == dataset) & (runs["backbone"] == backbone)]
        what = "OOD detection AUROC" if ood else "summary"
        table = summary_table(group, columns, marks, members, f"{dataset} / {backbone}: {what}")
        table.notes = [UNITS, legend(style)]
        table.key += "-ood" if ood else ""
        tables.append(table)
    return tables


def per_run_table(runs: pd.DataFrame) -> Table:
    """Every run: its keys and run id, every metric (with the bootstrap 95% interval over test
    samples where the run has one) and its OOD AUROCs."""
    ood = sorted(c for c in runs.columns if c.startswith("ood_"))
    metrics = [m for m in METRICS if m in runs.columns] + ood
    columns = [text_column(k) for k in [*KEYS, "run_id"]]
    columns += [metric_column(m, _group_of(m)) for m in metrics]
    edge = set(_at_edge(runs)["run_id"])
    rows = []
    for _, run in runs.iterrows():
        cells = [Cell(run[k]) for k in [*KEYS, "run_id"]]
        for metric in metrics:
            low, high = run.get(f"{metric}_low"), run.get(f"{metric}_high")
            interval = None if low is None or pd.isna(low) else (low, high)
            flagged = metric == "temperature" and run["run_id"] in edge
            cells.append(
                Cell(run[metric], interval=interval, flag=EDGE_RUN_FLAG if flagged else "")
            )
        rows.append(Row(cells))
    intervals = ", ".join(INTERVAL_METRICS)
    notes = [
        UNITS.replace("mean ± std over seeds; ", ""),
        f"In brackets: the bootstrap 95% interval over test samples ({intervals}, and after "
        "TS); it describes the test sample, not the training noise.",
    ]
    return Table("Every run", columns, rows, notes, key="every-run")


GLOSSARY_EXTRA = (
    ("T", "temperature", "the temperature T of temperature scaling, softmax(z / T), fitted on "
     "the validation logits (by default the T of the grid 0.1..10 with the lowest validation "
     "ECE)", "plain", "none", "-", "Guo et al. 2017"),
    ("(TS)", "<metric>_ts", "the metric of the test logits divided by the fitted T", "-", "-",
     "-", "Guo et al. 2017"),
    ("OOD AUROC", "ood_<set>_auroc_<score>", "area under the ROC curve separating in-"
     "distribution from OOD test images by normalised entropy (OOD positive) or max softmax "
     "probability (in-distribution positive)", "plain", "higher", "-",
     "Hendrycks and Gimpel 2017"),
)  # fmt: skip
"""Columns that are not metrics of the metric table."""


def glossary_table() -> Table:
    """Every metric of the metric table (and T, (TS), OOD AUROC): label, name, definition,
    unit, direction, binning and source."""
    header = ["column", "name", "definition", "unit", "better", "binning", "source"]
    rows = [
        Row([Cell(m.label), Cell(m.name), Cell(m.description), Cell(m.unit),
             Cell("lower" if m.lower_is_better else "higher"), Cell(m.binning or "-"),
             Cell(m.source or "-")])
        for m in METRIC_TABLE
    ]  # fmt: skip
    rows += [Row([Cell(value) for value in extra]) for extra in GLOSSARY_EXTRA]
    return Table(
        "Glossary",
        [text_column(h) for h in header],
        rows,
        ["Every column of the report's tables; binned metrics use the run's bin count."],
        key="glossary-table",
    )
