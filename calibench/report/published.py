"""Published numbers beside the measured ones (``calibench report --compare published``).

The numbers live in ``calibench/report/published.csv``, one value per row: dataset, backbone, method
(calibench's name), published_name, metric, value (in the paper's unit: percent for accuracy,
error and ECE-like metrics), source, table, verified ("yes" only when read from the primary
source named in ``source``), epochs, seeds and hparams of the published run (blank when the
source does not state them). Matching and the settings notes: docs/report.md, "Published
numbers".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from calibench.errors import CalibenchError
from calibench.report.table import Cell, Column, Row, Table, is_percent, text_column

PUBLISHED = Path(__file__).resolve().parent / "published.csv"
COLUMNS = [
    "dataset",
    "backbone",
    "method",
    "published_name",
    "metric",
    "value",
    "source",
    "table",
    "verified",
    "epochs",
    "seeds",
    "hparams",
]


def load_published(path: Path = PUBLISHED) -> pd.DataFrame:
    """The published numbers as a data frame (strings, with ``value`` as float)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise CalibenchError(f"cannot read the published numbers {path} ({exc}).") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise CalibenchError(f"{path} lacks the columns {', '.join(missing)}.")
    try:
        table["value"] = table["value"].astype(float)
    except ValueError as exc:
        raise CalibenchError(f"{path}: a value is not a number ({exc}).") from None
    bad = sorted(set(table["verified"]) - {"yes", "no"})
    if bad:
        raise CalibenchError(f"{path}: verified must be yes or no, not {', '.join(bad)}.")
    return table


def measured_value(row: pd.Series, metric: str) -> float:
    """A summary row's mean of ``metric`` in the published unit: percent for accuracy and the
    ECE-like metrics, ``error`` as 100 - accuracy, anything else as is. NaN when absent."""
    if metric == "error":
        return 100 * (1 - row["acc"]) if "acc" in row else float("nan")
    if metric not in row:
        return float("nan")
    value = float(row[metric])
    return 100 * value if is_percent(metric) else value


def _hparams(table: pd.DataFrame | None) -> dict[str, str]:
    if table is None or "hparams" not in table.columns:
        return {}
    return dict(zip(table["config_id"], table["hparams"].fillna(""), strict=False))


def setting_notes(published: pd.Series, measured: pd.Series, hparams: str) -> str:
    """Where the measured run's settings differ from the published run's (backbone, epochs,
    seeds, hyperparameters), as one line; empty when nothing differs that both state."""
    notes = []
    if published["backbone"] != measured["backbone"]:
        notes.append(f"backbone {measured['backbone']} here, {published['backbone']} published")
    if published["epochs"] and str(published["epochs"]) != str(measured["epochs"]):
        notes.append(f"epochs {measured['epochs']} here, {published['epochs']} published")
    elif not published["epochs"]:
        notes.append(f"epochs {measured['epochs']} here, not stated in the source")
    if published["seeds"] and str(published["seeds"]) != str(measured["seeds"]):
        notes.append(f"seeds {measured['seeds']} here, {published['seeds']} published")
    elif not published["seeds"]:
        notes.append(f"seeds {measured['seeds']} here, not stated in the source")
    if published["hparams"]:
        here = set(hparams.split())
        differ = [h for h in published["hparams"].split() if h not in here]
        if differ:
            notes.append(f"published {' '.join(differ)}, here {hparams or 'the defaults'}")
    if published["verified"] != "yes":
        notes.append("published value not verified")
    return "; ".join(notes)


def compare_published(
    summary: pd.DataFrame, table: pd.DataFrame | None = None, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per published value whose dataset and method were measured, on the same
    backbone, or on any backbone when none of the published ones was measured (the difference
    is then noted): dataset, backbone (published), method, metric, published,
    measured, difference (measured - published), verified, source and settings notes.
    ``summary`` is :func:`calibench.report.build.summarise`'s; ``table`` the per-run table, for the
    hyperparameters."""
    published = load_published() if published is None else published
    hparams = _hparams(table)
    base = summary["method"].str.replace(r" \[.*\]$", "", regex=True)
    published_backbones = published.groupby(["dataset", "method"])["backbone"].agg(set)
    rows = []
    for _, pub in published.iterrows():
        matches = summary[(summary["dataset"] == pub["dataset"]) & (base == pub["method"])]
        overlap = set(matches["backbone"]) & published_backbones[(pub["dataset"], pub["method"])]
        if overlap:
            matches = matches[matches["backbone"] == pub["backbone"]]
        for _, got in matches.iterrows():
            value = measured_value(got, pub["metric"])
            rows.append(
                {
                    "dataset": pub["dataset"],
                    "backbone": pub["backbone"],
                    "measured_backbone": got["backbone"],
                    "method": got["method"],
                    "published_name": pub["published_name"],
                    "metric": pub["metric"],
                    "published": pub["value"],
                    "measured": value,
                    "difference": value - pub["value"],
                    "verified": pub["verified"],
                    "source": f"{pub['source']}; {pub['table']}",
                    "settings": setting_notes(pub, got, hparams.get(got["config_id"], "")),
                }
            )
    return pd.DataFrame(rows)


INTRO = (
    "Percent for accuracy, error and ECE-like metrics; difference = measured - published. "
    "Settings that differ are listed per row; a published value marked no under verified was "
    "not read from its primary source."
)


def nothing_matches(published: pd.DataFrame | None = None) -> str:
    """The note shown when no measured dataset and method has published numbers: which do."""
    published = load_published() if published is None else published
    have = published.groupby("dataset")["method"].unique()
    return (
        "No measured dataset and method has published numbers. Published numbers exist for "
        + "; ".join(f"{d}: {', '.join(sorted(m))}" for d, m in have.items())
        + "."
    )


def comparison_table(comparison: pd.DataFrame) -> Table:
    """The published values beside the measured ones (rows of :func:`compare_published`)."""
    columns = [
        text_column("dataset"),
        text_column("backbone"),
        text_column("method"),
        text_column("metric"),
        Column("published", "published", 2),
        Column("measured", "measured", 2),
        Column("difference", "difference", 2, signed=True),
        text_column("verified"),
        text_column("settings", "settings that differ"),
        text_column("source"),
    ]
    rows = [
        Row(
            [
                Cell(r["dataset"]),
                Cell(r["measured_backbone"]),
                Cell(f"{r['method']} ({r['published_name']})"),
                Cell(r["metric"]),
                *(Cell(r[c]) for c in ("published", "measured", "difference")),
                Cell(r["verified"]),
                Cell(r["settings"] or "-"),
                Cell(r["source"]),
            ]
        )
        for _, r in comparison.iterrows()
    ]
    return Table("Published numbers", columns, rows, [INTRO], key="published-table")
