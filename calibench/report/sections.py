"""The report's sections beside the summary: post-hoc calibrators (method x calibrator, with the
warnings of the fits), ablations (one parameter varied at a time) and dataset shift (per
severity, Ovadia et al., NeurIPS 2019). Each section is a data frame (written as csv) and
:class:`~calibench.report.table.Table` s; its figures are drawn by
:mod:`calibench.report.figures`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from calibench.evaluation.metrics import metrics_in
from calibench.evaluation.record import (
    CALIBRATOR_METRICS,
    SHIFT_METRICS,
    Transform,
    calibrator_rows,
    shift_rows,
)
from calibench.evaluation.shift import read_shift_logits
from calibench.report.collect import StoredRun, config_settings
from calibench.report.table import Cell, Row, Table, label, metric_column, text_column
from calibench.store.files import RunDir

WARNING = "warning"
"""The column of a calibrator row that says why its fit is unsound ("" when it is sound)."""
SPREAD = "mean ± std over seeds"
CALIBRATOR_INTRO = (
    "Every calibrator is fitted on each run's validation logits and applied to its test logits; "
    f"{SPREAD}. Vector, matrix and Dirichlet scaling and the binning "
    "calibrators can change accuracy; temperature scaling cannot. A flagged cell: a fit of that "
    "configuration and calibrator carries a warning (its note says why and for which seeds)."
)
MIXING_INTRO = (
    "Mean confidence of x' = λ x_i + (1-λ) x_j over test pairs of different labels, for the "
    "lowest seed of each configuration; order agreement: the fraction of comparisons where the "
    "mix with the larger max(λ, 1-λ) has the higher confidence (the order M-NDCG of RankMixup, "
    "Noh et al. 2023, trains for)."
)

# post-hoc calibrators ----------------------------------------------------------------------


def calibrator_table(
    runs: list[StoredRun], transforms: dict[str, dict[str, Transform]]
) -> pd.DataFrame:
    """One row per run x post-hoc calibrator with its test metrics (and OOD AUROCs)."""
    rows = []
    for _, spec, logits in runs:
        rows += [
            {**spec.keys(), **row}
            for row in calibrator_rows(
                transforms[spec.run_id],
                logits["test_logits"],
                logits["test_labels"],
                spec.training.n_bins,
                {name: logits[f"ood_{name}_logits"] for name in spec.ood},
            )
        ]
    return pd.DataFrame(rows)


def _fit_warnings(rows: pd.DataFrame) -> str:
    """The distinct warnings of one configuration and calibrator, with the seeds they hold for."""
    if WARNING not in rows.columns:
        return ""
    found = rows[rows[WARNING].fillna("").astype(str) != ""]
    by_text = found.groupby(WARNING)["seed"].apply(lambda s: ", ".join(map(str, sorted(s))))
    return "; ".join(f"{text} (seed {seeds})" for text, seeds in by_text.items())


def calibrator_summary(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Mean and std over seeds per dataset, backbone, configuration and calibrator, with the
    fits' warnings and the configuration's label as ``method``."""
    keys = ["dataset", "backbone", "config_id", "calibrator"]
    metrics = [*CALIBRATOR_METRICS, *sorted(c for c in table.columns if c.startswith("ood_"))]
    grouped = table.groupby(keys, sort=False)
    summary = grouped[metrics].mean().join(grouped[metrics].std(ddof=1).add_suffix("_std"))
    summary[WARNING] = grouped.apply(_fit_warnings, include_groups=False)
    summary = summary.reset_index()
    summary["method"] = summary["config_id"].map(labels)
    return summary


def _calibrator_pivot(group: pd.DataFrame, metric: str, title: str) -> Table:
    """Configurations x calibrators of one metric; a cell is flagged with its fits' warnings."""
    calibrators = list(dict.fromkeys(group["calibrator"]))
    column = metric_column(metric)
    columns = [text_column("method")] + [replace(column, key=c, label=c) for c in calibrators]
    rows = []
    for method, members in group.groupby("method", sort=False):
        by = members.set_index("calibrator")
        cells = [Cell(method)]
        for c in calibrators:
            hit = by.loc[c] if c in by.index else None
            flag = "" if hit is None else hit[WARNING]
            cells.append(
                Cell() if hit is None else Cell(hit[metric], hit[f"{metric}_std"], flag=flag)
            )
        rows.append(Row(cells))
    notes = [f"{column.description or label(metric)}; {SPREAD}."]
    return Table(title, columns, rows, notes)


def calibrator_tables(summary: pd.DataFrame) -> list[Table]:
    """Per metric, dataset and backbone: configurations x calibrators, mean ± std over seeds;
    a cell whose fit carries a warning is flagged with it."""
    tables = []
    ood = sorted(c for c in summary.columns if c.startswith("ood_") and not c.endswith("_std"))
    for metric in (*CALIBRATOR_METRICS, *ood):
        for (dataset, backbone), group in summary.groupby(["dataset", "backbone"], sort=False):
            if group[metric].notna().any():
                table = _calibrator_pivot(group, metric, f"{label(metric)}: {dataset} / {backbone}")
                table.key = f"calibrators-{metric}-{dataset}-{backbone}"
                tables.append(table)
    return tables


# ablations ---------------------------------------------------------------------------------

GROUP = ["dataset", "backbone", "method"]
ABLATION_METRICS = (*metrics_in("ablation"), "ece_ts")


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """For each method and each parameter it varies: one row per value, with the others at
    their most common value; mean and std over seeds of :data:`ABLATION_METRICS`."""
    settings = config_settings(table)
    rows = []
    for keys, group in settings.groupby(GROUP):
        params = [c for c in group.columns if c not in GROUP and group[c].nunique() > 1]
        base = {c: group[c].mode().iloc[0] for c in params}
        for param in params:
            others = [c for c in params if c != param]
            members = group[(group[others] == pd.Series(base)[others]).all(axis=1)]
            for config_id, row in members.iterrows():
                runs = table[table["config_id"] == config_id]
                record = dict(zip(GROUP, keys, strict=True))
                record.update(parameter=param, value=row[param], seeds=len(runs))
                for metric in ABLATION_METRICS:
                    record[metric] = runs[metric].mean()
                    record[f"{metric}_std"] = runs[metric].std(ddof=1)
                rows.append(record)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["numeric"] = pd.to_numeric(out["value"], errors="coerce")
    return out.sort_values([*GROUP, "parameter", "numeric", "value"]).drop(columns="numeric")


def ablation_tables(ablation: pd.DataFrame) -> list[Table]:
    """The ablation as one table: dataset, backbone, method, parameter, value and seeds, then
    :data:`ABLATION_METRICS` as mean ± std over seeds; none without an ablation."""
    if ablation.empty:
        return []
    keys = [*GROUP, "parameter", "value", "seeds"]
    columns = [text_column(k) for k in keys] + [metric_column(m) for m in ABLATION_METRICS]
    rows = [
        Row([*(Cell(r[k]) for k in keys), *(Cell(r[m], r[f"{m}_std"]) for m in ABLATION_METRICS)])
        for _, r in ablation.iterrows()
    ]
    notes = [
        "Each parameter varied one at a time, the others at their most common value; percent, "
        f"{SPREAD}."
    ]
    return [Table("Ablations", columns, rows, notes, key="ablation-table")]


# dataset shift -----------------------------------------------------------------------------

SHIFT_KEYS = ["dataset", "backbone", "method", "config_id", "seed", "run_id"]


def shift_table(
    runs: list[tuple[StoredRun, Path, dict[str, Transform]]], warn: Callable[[str], None]
) -> pd.DataFrame:
    """One row per run x shifted set x corruption x severity x calibrator; ``runs`` holds each
    run, its folder and its fitted calibrator transforms. A damaged shift file is skipped with
    a warning."""
    rows = []
    for run, run_dir, transforms in runs:
        for set_name, path in RunDir(run_dir).shift_files().items():
            try:
                shifted = read_shift_logits(path)
            except (OSError, ValueError, KeyError) as exc:
                warn(f"skipped damaged shift file {path} ({type(exc).__name__})")
                continue
            ids = {**run.spec.keys(), "set": set_name}
            n_bins = run.spec.training.n_bins
            rows += [{**ids, **row} for row in shift_rows(shifted, transforms, n_bins)]
    return pd.DataFrame(rows)


def severity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over corruptions per (run, severity, calibrator), then mean and std over seeds."""
    per_run = (
        table.groupby([*SHIFT_KEYS, "set", "calibrator", "severity"])[list(SHIFT_METRICS)]
        .mean()
        .reset_index()
    )
    keys = ["set", "dataset", "backbone", "method", "config_id", "calibrator", "severity"]
    grouped = per_run.groupby(keys)[list(SHIFT_METRICS)]
    summary = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    summary.insert(len(keys), "seeds", per_run.groupby(keys).size().to_numpy())
    return summary


def severity_tables(shift: pd.DataFrame) -> list[Table]:
    """The per-severity table of :func:`shift_table`'s rows (see :func:`severity_summary`): set,
    backbone, method, calibrator and severity, then
    :data:`~calibench.evaluation.record.SHIFT_METRICS` as mean ± std over seeds; none without
    shift logits."""
    if shift.empty:
        return []
    summary = severity_summary(shift)
    keys = ["set", "backbone", "method", "calibrator", "severity"]
    columns = [text_column(k) for k in keys] + [metric_column(m) for m in SHIFT_METRICS]
    rows = [
        Row([*(Cell(r[k]) for k in keys), *(Cell(r[m], r[f"{m}_std"]) for m in SHIFT_METRICS)])
        for _, r in summary.iterrows()
    ]
    notes = [
        "Per severity, the mean over corruptions, then the mean ± std over seeds; accuracy and "
        "calibration errors in percent, NLL plain. Every calibrator is fitted on the clean "
        "validation split."
    ]
    return [Table("Dataset shift per severity", columns, rows, notes, key="severity-table")]


def shift_groups(table: pd.DataFrame, metric: str = "ece") -> list[tuple[str, pd.DataFrame]]:
    """Per shifted set, backbone and calibrator: a name and the rows of its box plot (one per
    method, severity and corruption, ``metric`` averaged over seeds)."""
    per_corruption = (
        table.groupby(["set", "backbone", "calibrator", "method", "severity", "corruption"])[metric]
        .mean()
        .reset_index()
    )
    return [
        (f"{name} | {backbone} | calibrator: {calibrator}", group)
        for (name, backbone, calibrator), group in per_corruption.groupby(
            ["set", "backbone", "calibrator"]
        )
    ]
