"""``results.tex``: one booktabs table per dataset and backbone, mean $\\pm$ std over seeds, the
best value of each column in bold (tied values underlined). Needs ``\\usepackage{booktabs}``."""

from __future__ import annotations

import re

import pandas as pd

from calibench.report.table import GROUP, Marks, best_marks, fmt, label, metric_columns

SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: SPECIALS[m.group()], str(text))


def cell(mean: float, std: float | None, column: str, mark: str) -> str:
    """``$mean \\pm std$`` in the column's unit; bold when ``mark`` is "best", underlined when
    "tied"; ``-`` for a missing value."""
    if pd.isna(mean):
        return "-"
    body = fmt(mean, column)
    if std is not None and not pd.isna(std):
        body += rf" \pm {fmt(std, column)}"
    if mark == "best":
        body = rf"\mathbf{{{body}}}"
    elif mark == "tied":
        body = rf"\underline{{{body}}}"
    return f"${body}$"


def latex_table(
    group: pd.DataFrame, columns: list[str], marks: Marks, caption: str, suffix: str = ""
) -> str:
    """One ``table`` float (label ``tab:<dataset>-<backbone><suffix>``): method, epochs,
    seeds, then ``columns``."""
    spec = "l" + "r" * (2 + len(columns))
    head = ["Method", "Epochs", "Seeds", *[escape(label(c)) for c in columns]]
    rows = [
        [
            escape(row["method"]),
            str(row["epochs"]),
            str(row["seeds"]),
            *[
                cell(row[c], row.get(f"{c}_std"), c, marks.get(c, {}).get(index, ""))
                for c in columns
            ],
        ]
        for index, row in group.iterrows()
    ]
    key = "-".join(re.sub(r"[^A-Za-z0-9]+", "-", str(group.iloc[0][g])) for g in GROUP)
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\caption{{{caption}}}",
            rf"\label{{tab:{key}{suffix}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(head) + r" \\",
            r"\midrule",
            *[" & ".join(r) + r" \\" for r in rows],
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def latex_report(summary: pd.DataFrame, marks: Marks | None = None) -> str:
    """Every (dataset, backbone) of ``summary`` (from :func:`calibench.report.build.summarise`) as a
    table of its non-OOD metrics, and a second table of its OOD AUROCs when there are any.
    ``marks`` defaults to :func:`calibench.report.table.best_marks`."""
    marks = best_marks(summary) if marks is None else marks
    parts = [
        "% calibench results: needs \\usepackage{booktabs}; mean $\\pm$ std over seeds; "
        "best per column in bold, tied underlined.",
    ]
    for (dataset, backbone), group in summary.groupby(GROUP, sort=True):
        where = f"{escape(dataset)} / {escape(backbone)}"
        columns = [c for c in metric_columns(summary, ood=False) if group[c].notna().any()]
        parts.append(
            latex_table(
                group,
                columns,
                marks,
                f"{where}: mean $\\pm$ std over seeds; accuracy and ECE-like metrics in percent; "
                "(TS) after temperature scaling fitted on the validation set; best in bold.",
            )
        )
        ood = [c for c in metric_columns(summary, ood=True) if group[c].notna().any()]
        if ood:
            parts.append(latex_table(group, ood, marks, f"{where}: OOD detection AUROC.", "-ood"))
    return "\n\n".join(parts) + "\n"
