"""The marks of the report's tables: where they come from and what they mean.

Every mark in every format (markdown, LaTeX, HTML, terminal) comes from :func:`table_marks`, the
report's one call of the rule in :mod:`calibench.evaluation.compare`; every caption and legend
that explains the marks comes from :func:`legend`, so the words cannot drift from the rule.
"""

from __future__ import annotations

import pandas as pd

from calibench.errors import CalibenchError
from calibench.evaluation.compare import compare_table
from calibench.evaluation.metrics import is_lower_better

Marks = dict[str, pd.Series]
"""Per metric column of a summary, a Series on the summary's index holding "best", "tied" or
""."""
MARKS = ("best", "tied")

RULE = {
    "best": "the best mean, and different from every other configuration of its table beyond "
    "the seed noise (pairwise t-tests of a randomised block design over the common seeds, "
    "Holm-adjusted at family-wise 5%)",
    "tied": "the best mean and every configuration not significantly different from it, when "
    "no configuration is best",
}
"""What each mark means (calibench.evaluation.compare.compare_table)."""
ONE_SEED = "With one seed the noise is not measured, so no configuration is marked."
STYLES = {
    "md": {"best": "**bold**", "tied": "≈"},
    "tex": {"best": "bold", "tied": "underlined"},
    "html": {"best": "bold on green", "tied": "underlined"},
    "terminal": {"best": "bold", "tied": "≈"},
}
"""How each output format shows a mark (calibench.report.table renders them so)."""


def legend(style: str) -> str:
    """One sentence per mark, as ``style`` (md, tex, html, terminal) shows it, and the one-seed
    case: the caption of every marked table."""
    shown = STYLES[style]
    parts = [f"{shown[mark]}: {RULE[mark]}" for mark in MARKS]
    return "; ".join(parts) + ". " + ONE_SEED + " T has no direction and no mark."


def direction(column: str) -> bool | None:
    """True when lower is better, False when higher is, None when a column has no direction
    (T, or a name the metric table does not know)."""
    try:
        return is_lower_better(column)
    except CalibenchError:
        return None


def table_marks(runs: pd.DataFrame, summary: pd.DataFrame, columns: list[str]) -> Marks:
    """Per column of ``columns`` (metric means in ``summary``): the marks of each (dataset,
    backbone) table by the rule of :mod:`calibench.evaluation.compare`, from the per-seed values
    in ``runs`` (one row per run, with ``config_id``). ``summary["method"]`` holds the
    configurations' labels. Columns without a direction get no marks."""
    labels = dict(zip(summary["config_id"], summary["method"], strict=True))
    per_run = runs.assign(label=runs["config_id"].map(labels))
    marks: Marks = {}
    for column in columns:
        marks[column] = pd.Series("", index=summary.index, dtype=object)
        lower = direction(column)
        if lower is None or column not in per_run:
            continue
        for (dataset, backbone), group in summary.groupby(["dataset", "backbone"]):
            members = per_run[(per_run["dataset"] == dataset) & (per_run["backbone"] == backbone)]
            verdict = compare_table(members, column, lower, method_column="label")
            marks[column][group.index] = group["method"].map(verdict.marks).fillna("")
    return marks
