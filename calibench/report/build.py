"""Tables and reliability diagrams built from the store alone.

Every number is recomputed from the logits saved with each run (the temperature is refitted on
its validation logits with the run's recorded fit), so a report can be rebuilt at any time,
from any machine that sees the results folder, without retraining.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from calibench.errors import CalibenchError
from calibench.evaluation.compare import compare_table
from calibench.evaluation.metrics import (
    METRIC_INFO,
    METRIC_NAMES,
    calibration_bins,
    equal_width_edges,
    is_lower_better,
    metrics_in,
    softmax,
    top_label,
)
from calibench.evaluation.record import (
    CALIBRATOR_METRICS,
    Transform,
    calibrator_rows,
    evaluate_logits,
    fit_calibrators,
)
from calibench.registry import CALIBRATORS
from calibench.report.ablation import (
    ABLATION_METRICS,
    ablation_figures,
    ablation_table,
    config_labels,
)
from calibench.report.latex import latex_report
from calibench.report.published import compare_published, comparison_markdown
from calibench.report.reliability import reliability_diagram
from calibench.report.shift import severity_markdown, severity_summary, shift_box_plots, shift_table
from calibench.report.table import Marks
from calibench.spec import RunSpec, run_name
from calibench.store.files import RunDir, write_text
from calibench.store.index import Store

KEYS = ["method", "dataset", "backbone", "seed", "epochs"]
METRICS = [*METRIC_NAMES, "temperature", *(f"{m}_ts" for m in METRIC_NAMES)]
PERCENT = {
    m
    for m in METRICS
    if m != "temperature" and METRIC_INFO[m.removesuffix("_ts")].unit == "percent"
}
SUMMARY_BASE = metrics_in("summary")
SUMMARY = [*SUMMARY_BASE, "temperature", *(f"{m}_ts" for m in SUMMARY_BASE)]
FORMATS = ("md", "csv", "tex", "html")
COMPARE = ("published",)


def load_run(run: dict[str, Any]) -> tuple[RunSpec, dict[str, np.ndarray]]:
    """A complete run's spec and saved logits; a damaged run folder is a clear error."""
    try:
        spec = RunSpec.from_dict(json.loads((RunDir(run["dir"]) / RunDir.CONFIG).read_text()))
        with np.load(RunDir(run["dir"]) / RunDir.LOGITS) as f:
            logits = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise CalibenchError(
            f"run folder {run['dir']} is damaged ({exc}). The same `calibench run` "
            "recomputes it (--force retrains it)."
        ) from None
    return spec, logits


def collect(
    store: Store, warn: Callable[[str], None] | None = None
) -> tuple[pd.DataFrame, list[tuple[str, RunSpec, dict]]]:
    """One row per complete run with every metric recomputed from its logits; a run whose
    stored result is damaged is left out with a warning (docs/reliability.md)."""
    rows, runs = [], []
    for run in store.runs():
        if run.get("damaged"):
            run_problem = f"run folder {run['dir']} is damaged ({run['damaged']})"
            (warn or print)(f"{run_problem}; left out. `calibench run` recomputes it.")
            continue
        if run["status"] != "complete":
            continue
        try:
            spec, logits = load_run(run)
        except CalibenchError as exc:
            (warn or print)(f"{exc} Left out of this report.")
            continue
        metrics = evaluate_logits(logits, spec.training.temperature_fit, spec.training.n_bins)
        rows.append(
            {
                "method": spec.method,
                "dataset": spec.dataset,
                "backbone": spec.backbone,
                "seed": spec.seed,
                "epochs": spec.training.epochs,
                "hparams": " ".join(f"{k}={v}" for k, v in sorted(spec.hparams.items())),
                "config_id": spec.config_id,
                "run_id": spec.run_id,
                **{k: v for k, v in metrics.items() if isinstance(v, float | int)},
            }
        )
        runs.append((run_name(spec), spec, logits))
    if not rows:
        raise CalibenchError(f"no complete runs in {store.root}. Run `calibench run` first.")
    return pd.DataFrame(rows), runs


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over the seeds of each configuration (runs that
    differ only by seed). When one method has several configurations in the store (other
    epochs or hyperparameters), its rows are told apart by their config id."""
    columns = [c for c in SUMMARY if c in table.columns]
    columns += sorted(c for c in table.columns if c.startswith("ood_"))
    keys = ["dataset", "backbone", "method", "config_id"]
    grouped = table.groupby(keys, sort=True)
    summary = grouped[columns].mean().join(grouped[columns].std(ddof=1).add_suffix("_std"))
    summary.insert(0, "seeds", grouped.size())
    summary.insert(0, "epochs", grouped["epochs"].first())
    summary = summary.reset_index()
    summary["method"] = summary["config_id"].map(config_labels(table))
    return summary


def _fmt(value: float, column: str) -> str:
    if pd.isna(value):
        return "-"
    return f"{100 * value:.2f}" if column in PERCENT else f"{value:.3f}"


def _cell(row: pd.Series, column: str) -> str:
    mean = _fmt(row[column], column)
    std = row.get(f"{column}_std")
    return mean if std is None or pd.isna(std) else f"{mean} ± {_fmt(std, column)}"


def summary_metrics(summary: pd.DataFrame) -> list[str]:
    """The metric columns of a summary table, in display order."""
    return [
        c
        for c in summary.columns
        if (c in SUMMARY or c.startswith("ood_")) and not c.endswith(("_std", "_low", "_high"))
    ]


def best_marks(table: pd.DataFrame, summary: pd.DataFrame) -> Marks:
    """Per metric column of the summary, per dataset/backbone, the marks of THE verdict rule
    (:func:`calibench.evaluation.compare.compare_table`, docs/statistics.md): "best", "tied" or
    "". Temperature gets no mark."""
    labels = dict(zip(summary["config_id"], summary["method"], strict=True))
    runs = table.assign(label=table["config_id"].map(labels))
    marks: Marks = {}
    for column in summary_metrics(summary):
        marks[column] = pd.Series("", index=summary.index, dtype=object)
        if column == "temperature" or column not in runs:
            continue
        lower = is_lower_better(column)
        for (dataset, backbone), group in summary.groupby(["dataset", "backbone"]):
            members = runs[(runs["dataset"] == dataset) & (runs["backbone"] == backbone)]
            verdict = compare_table(members, column, lower, method_column="label")
            marks[column][group.index] = group["method"].map(verdict.marks).fillna("")
    return marks


def summary_cells(
    summary: pd.DataFrame, marks: Marks | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and string rows of the summary table (ECE-like values and accuracy in percent);
    a "best" mark makes a cell bold, a "tied" mark appends "≈" (markdown)."""
    metrics = summary_metrics(summary)

    def cell(index: object, row: pd.Series, metric: str) -> str:
        text = _cell(row, metric)
        mark = "" if marks is None or metric not in marks else marks[metric][index]
        return f"**{text}**" if mark == "best" else f"{text} ≈" if mark == "tied" else text

    header = ["dataset", "backbone", "method", "epochs", "seeds", *metrics]
    rows = [
        [
            str(r.dataset),
            str(r.backbone),
            str(r.method),
            str(r.epochs),
            str(r.seeds),
            *[cell(i, r, m) for m in metrics],
        ]
        for i, r in summary.iterrows()
    ]
    return header, rows


def _md(cell: str) -> str:
    """A markdown table cell, its pipes escaped (brackets such as ``ce [5c5a48]`` are text in
    markdown unless a link definition follows, which a report never writes)."""
    return cell.replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def per_run_markdown(table: pd.DataFrame) -> str:
    """Every run's metrics; ECE, AdaECE and NLL with their bootstrap 95% interval over test
    samples (docs/statistics.md)."""

    def cell(row: pd.Series, column: str) -> str:
        if column in KEYS:
            return str(row[column])
        text = _fmt(row[column], column)
        low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
        if low is None or pd.isna(low):
            return text
        return f"{text} [{_fmt(low, column)}, {_fmt(high, column)}]"

    columns = [*KEYS, *[m for m in METRICS if m in table.columns]]
    return markdown_table(columns, [[cell(r, c) for c in columns] for _, r in table.iterrows()])


def draw_diagrams(runs: list[tuple[str, RunSpec, dict]], table: pd.DataFrame, folder: Path) -> None:
    """Two reliability diagrams per run: test logits before and after temperature scaling."""
    temperatures = dict(zip(table["run_id"], table["temperature"], strict=True))
    for name, spec, logits in runs:
        t = temperatures[spec.run_id]
        for suffix, scale, label in (("", 1.0, "before TS"), ("_ts", t, f"after TS, T={t:.1f}")):
            conf, hit = top_label(softmax(logits["test_logits"] / scale), logits["test_labels"])
            bins = calibration_bins(conf, hit, equal_width_edges(spec.training.n_bins))
            title = f"{spec.method} | {spec.dataset} | {spec.backbone} | seed {spec.seed} ({label})"
            reliability_diagram(bins, title, folder / f"{name}{suffix}.png")


TERMINAL_COLUMNS = (
    "method",
    "epochs",
    "seeds",
    "acc",
    "ece",
    "adaece",
    "cece",
    "temperature",
    "ece_ts",
    "adaece_ts",
    "cece_ts",
)


def print_summary(header: list[str], rows: list[list[str]], console: Console) -> None:
    """The summary on the terminal: one table per dataset and backbone, key columns only."""
    if console.width < 160:
        console = Console(file=console.file, width=160)
    keep = [header.index(c) for c in TERMINAL_COLUMNS if c in header]
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1]), []).append(row)
    for (dataset, backbone), members in groups.items():
        table = Table(
            title=f"{escape(dataset)} / {escape(backbone)}: percent, mean ± std over seeds, "
            "_ts after temperature scaling",
            title_justify="left",
        )
        for i in keep:
            table.add_column(
                header[i].replace("temperature", "T"),
                no_wrap=True,
                justify="left" if header[i] == "method" else "right",
            )
        for row in members:
            table.add_row(*[escape(row[i]) for i in keep])
        console.print(table)


def calibrator_table(
    runs: list[tuple[str, RunSpec, dict]], transforms: dict[str, dict[str, Transform]]
) -> pd.DataFrame:
    """One row per run x post-hoc calibrator with its test metrics."""
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


def write_calibrator_report(
    runs: list[tuple[str, RunSpec, dict]],
    transforms: dict[str, dict[str, Transform]],
    folder: Path,
    formats: tuple[str, ...],
    labels: dict[str, str],
) -> pd.DataFrame:
    """calibrators.csv (one row per run and calibrator) and calibrators.md: per dataset and
    backbone, method x calibrator ECE, accuracy and NLL, mean ± std over seeds."""
    table = calibrator_table(runs, transforms)
    if "csv" in formats:
        write_text(folder / "calibrators.csv", table.to_csv(index=False))
    if "md" not in formats:
        return table
    keys = ["dataset", "backbone", "method", "config_id", "calibrator"]
    ood = sorted(c for c in table.columns if c.startswith("ood_"))
    grouped = table.groupby(keys, sort=False)[[*CALIBRATOR_METRICS, *ood]]
    summary = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    parts = [
        "# Post-hoc calibrators\n\nEvery calibrator is fitted on each run's validation logits "
        "and applied to its test logits (docs/calibrators.md); percent except NLL, mean ± std "
        "over seeds. Vector, matrix and Dirichlet scaling and the binning calibrators can "
        "change accuracy; temperature scaling cannot.\n"
    ]
    for metric in ("ece", "acc", "nll", *ood):
        for (dataset, backbone), group in summary.groupby(["dataset", "backbone"], sort=False):
            if group[metric].isna().all():
                continue
            cells = group.assign(cell=[_cell(r, metric) for _, r in group.iterrows()])
            cells["method"] = cells["config_id"].map(labels)
            wide = cells.pivot(index="method", columns="calibrator", values="cell")
            wide = wide[list(dict.fromkeys(cells["calibrator"]))]
            header = ["method", *wide.columns]
            rows = [[str(m), *wide.loc[m]] for m in wide.index]
            title = f"\n## {metric}: {dataset} / {backbone}\n\n"
            parts.append(title + markdown_table(header, rows))
    write_text(folder / "calibrators.md", "".join(parts))
    return table


def write_ablation_report(
    table: pd.DataFrame, folder: Path, formats: tuple[str, ...]
) -> pd.DataFrame:
    """ablation.csv/md and a figure per varied parameter, when a method was trained with
    several hyperparameter values (a preset's ``vary`` or a ``--set`` grid)."""
    ablation = ablation_table(table)
    if ablation.empty:
        return ablation
    if "csv" in formats:
        write_text(folder / "ablation.csv", ablation.to_csv(index=False))
    if "md" in formats:
        header = ["dataset", "backbone", "method", "parameter", "value", "seeds"]
        header += list(ABLATION_METRICS)
        rows = [
            [*(str(r[c]) for c in header[:6]), *(_cell(r, m) for m in ABLATION_METRICS)]
            for _, r in ablation.iterrows()
        ]
        write_text(
            folder / "ablation.md",
            "# Ablations\n\nEach parameter varied one at a time, the others at their most "
            "common value; percent, mean ± std over seeds.\n\n" + markdown_table(header, rows),
        )
    ablation_figures(ablation, folder / "ablation")
    return ablation


def write_shift_report(
    store: Store,
    runs: list[tuple[str, RunSpec, dict]],
    transforms: dict[str, dict[str, Transform]],
    folder: Path,
    formats: tuple[str, ...],
) -> pd.DataFrame:
    """shift.csv, shift.md and box plots when runs hold shift logits (calibench evaluate)."""
    shift = shift_table(
        [(spec, store.run_dir(spec), transforms[spec.run_id]) for _, spec, _ in runs]
    )
    if shift.empty:
        return shift
    if "csv" in formats:
        write_text(folder / "shift.csv", shift.to_csv(index=False))
    summary = severity_summary(shift)
    if "md" in formats:
        write_text(
            folder / "shift.md",
            "# Dataset shift\n\nPer severity, the mean over corruptions (then mean ± std over "
            "seeds); accuracy and calibration errors in percent, NLL plain. Every calibrator is "
            "fitted on the clean validation split.\n\n" + severity_markdown(summary),
        )
    shift_box_plots(shift, folder / "shift")
    return shift


def bins_caption(table: pd.DataFrame) -> str:
    """The bin counts of the runs in ``table``, for captions (e.g. "15 bins")."""
    counts = sorted({int(n) for n in table["n_bins"]})
    return " or ".join(map(str, counts)) + (" bin" if counts == [1] else " bins")


def build_report(
    store: Store,
    formats: tuple[str, ...] = ("md", "csv", "html"),
    console: Console | None = None,
    compare: tuple[str, ...] = (),
    mixing_samples: int = 1000,
    calibrators: tuple[str, ...] | None = None,
) -> Path:
    """Write ``<output>/report/``: results.csv (fractions), results.md (percent), results.tex
    and index.html when asked, and reliability diagrams; print the summary table. ``compare``
    ("published") adds the published numbers beside the measured ones (docs/report.md).
    ``calibrators`` (default: every registered one) are fitted on each run's validation logits
    for the method x calibrator table and the shift tables. Returns the folder."""
    calibrators = tuple(CALIBRATORS.names()) if calibrators is None else calibrators
    for name in calibrators:
        CALIBRATORS.get(name)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CalibenchError(
            f"unknown report format {', '.join(bad)}. Valid: {', '.join(FORMATS)}."
        )
    bad = [c for c in compare if c not in COMPARE]
    if bad:
        raise CalibenchError(f"unknown --compare {', '.join(bad)}. Valid: {', '.join(COMPARE)}.")
    say = console or Console()
    table, runs = collect(
        store, lambda m: say.print(f"warning: {m}", markup=False, highlight=False, soft_wrap=True)
    )
    summary = summarise(table)
    folder = store.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    marks = best_marks(table, summary)
    header, rows = summary_cells(summary, marks)
    comparison = compare_published(summary, table) if "published" in compare else None
    if "csv" in formats:
        write_text(folder / "results.csv", table.to_csv(index=False))
        write_text(folder / "summary.csv", summary.to_csv(index=False))
    if "md" in formats:
        write_text(
            folder / "results.md",
            (
                "# calibench results\n\nAccuracy and calibration errors in percent "
                f"({bins_caption(table)}); `_ts` after temperature scaling fitted on the "
                "validation set; mean ± std over seeds. **Bold**: better than every other "
                "method by more than the seed noise (paired t-interval over seeds excludes 0); "
                "≈: tied for best (docs/statistics.md).\n\n"
                + markdown_table(header, rows)
                + "\n## Every run\n\nECE, AdaECE and NLL with their bootstrap 95% interval over "
                "test samples in brackets.\n\n"
                + per_run_markdown(table)
                + ("" if comparison is None else "\n" + comparison_markdown(comparison))
            ),
        )
    if "tex" in formats:
        write_text(folder / "results.tex", latex_report(summary, marks))
    draw_diagrams(runs, table, folder / "diagrams")
    transforms = {
        spec.run_id: fit_calibrators(calibrators, logits["val_logits"], logits["val_labels"])
        for _, spec, logits in runs
    }
    write_calibrator_report(runs, transforms, folder, formats, config_labels(table))
    write_ablation_report(table, folder, formats)
    write_shift_report(store, runs, transforms, folder, formats)
    if "html" in formats:
        from calibench.report.html import write_html_report

        write_html_report(store, folder, summary, table, runs, marks, comparison, mixing_samples)
    print_summary(header, rows, console or Console())
    (console or Console()).print(f"report written to {folder}")
    return folder
