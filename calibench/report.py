"""Tables and reliability diagrams built from the store alone.

Every number is recomputed from the logits saved with each run (the temperature is refitted on
its validation logits with the run's recorded fit), so a report can be rebuilt at any time,
from any machine that sees the results folder, without retraining.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from calibench.config import RunSpec
from calibench.errors import CalibenchError
from calibench.evaluation import evaluate_logits
from calibench.latex import latex_report
from calibench.metrics import calibration_bins, equal_width_edges, softmax, top_label
from calibench.published import compare_published, comparison_markdown
from calibench.reliability import reliability_diagram
from calibench.store import Store, write_text

KEYS = ["method", "dataset", "backbone", "seed", "epochs"]
METRICS = [
    "acc",
    "nll",
    "brier",
    "ece",
    "adaece",
    "cece",
    "mce",
    "temperature",
    "acc_ts",
    "nll_ts",
    "brier_ts",
    "ece_ts",
    "adaece_ts",
    "cece_ts",
    "mce_ts",
]
PERCENT = {
    "acc",
    "ece",
    "adaece",
    "cece",
    "mce",
    "acc_ts",
    "ece_ts",
    "adaece_ts",
    "cece_ts",
    "mce_ts",
}
SUMMARY = [
    "acc",
    "nll",
    "ece",
    "adaece",
    "cece",
    "temperature",
    "acc_ts",
    "nll_ts",
    "ece_ts",
    "adaece_ts",
    "cece_ts",
]
FORMATS = ("md", "csv", "tex", "html")
COMPARE = ("published",)


def load_run(run: dict[str, Any]) -> tuple[RunSpec, dict[str, np.ndarray]]:
    """A complete run's spec and saved logits; a damaged run folder is a clear error."""
    try:
        spec = RunSpec.from_dict(json.loads((run["dir"] / "config.json").read_text()))
        with np.load(run["dir"] / "logits.npz") as f:
            logits = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise CalibenchError(
            f"run folder {run['dir']} is damaged ({exc}). Retrain it with the same "
            "`calibench run ... --force`, or delete the folder and its row to drop it."
        ) from None
    return spec, logits


def collect(store: Store) -> tuple[pd.DataFrame, list[tuple[str, RunSpec, dict]]]:
    """One row per complete run with every metric recomputed from its logits."""
    rows, runs = [], []
    for run in store.complete_runs():
        spec, logits = load_run(run)
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


def run_name(spec: RunSpec) -> str:
    """A unique, readable file name stem for one run."""
    backbone = spec.backbone.replace("/", "-")
    return f"{spec.dataset}_{backbone}_{spec.method}_seed{spec.seed}_{spec.run_id}"


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
    clash = summary.duplicated(["dataset", "backbone", "method"], keep=False)
    summary.loc[clash, "method"] = summary["method"] + " [" + summary["config_id"].str[:6] + "]"
    return summary


def _fmt(value: float, column: str) -> str:
    if pd.isna(value):
        return "-"
    return f"{100 * value:.2f}" if column in PERCENT else f"{value:.3f}"


def _cell(row: pd.Series, column: str) -> str:
    mean = _fmt(row[column], column)
    std = row.get(f"{column}_std")
    return mean if std is None or pd.isna(std) else f"{mean} ± {_fmt(std, column)}"


def summary_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string rows of the summary table (ECE-like values and accuracy in percent)."""
    metrics = [
        c
        for c in summary.columns
        if (c in SUMMARY or c.startswith("ood_")) and not c.endswith("_std")
    ]
    header = ["dataset", "backbone", "method", "epochs", "seeds", *metrics]
    rows = [
        [
            str(r.dataset),
            str(r.backbone),
            str(r.method),
            str(r.epochs),
            str(r.seeds),
            *[_cell(r, m) for m in metrics],
        ]
        for _, r in summary.iterrows()
    ]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def per_run_markdown(table: pd.DataFrame) -> str:
    columns = [*KEYS, *[m for m in METRICS if m in table.columns]]
    rows = [
        [str(r[c]) if c in KEYS else _fmt(r[c], c) for c in columns] for _, r in table.iterrows()
    ]
    return markdown_table(columns, rows)


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
            title=f"{dataset} / {backbone}: percent, mean ± std over seeds, "
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
            table.add_row(*[row[i] for i in keep])
        console.print(table)


def build_report(
    store: Store,
    formats: tuple[str, ...] = ("md", "csv", "html"),
    console: Console | None = None,
    compare: tuple[str, ...] = (),
    mixing_samples: int = 1000,
) -> Path:
    """Write ``<output>/report/``: results.csv (fractions), results.md (percent), results.tex
    and index.html when asked, and reliability diagrams; print the summary table. ``compare``
    ("published") adds the published numbers beside the measured ones (docs/report.md).
    Returns the folder."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CalibenchError(
            f"unknown report format {', '.join(bad)}. Valid: {', '.join(FORMATS)}."
        )
    bad = [c for c in compare if c not in COMPARE]
    if bad:
        raise CalibenchError(f"unknown --compare {', '.join(bad)}. Valid: {', '.join(COMPARE)}.")
    table, runs = collect(store)
    summary = summarise(table)
    folder = store.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    header, rows = summary_cells(summary)
    comparison = compare_published(summary, table) if "published" in compare else None
    if "csv" in formats:
        write_text(folder / "results.csv", table.to_csv(index=False))
        write_text(folder / "summary.csv", summary.to_csv(index=False))
    if "md" in formats:
        write_text(
            folder / "results.md",
            (
                "# calibench results\n\nAccuracy and ECE-like metrics in percent (15 bins); "
                "`_ts` after temperature scaling fitted on the validation set; mean ± std over "
                "seeds.\n\n"
                + markdown_table(header, rows)
                + "\n## Every run\n\n"
                + per_run_markdown(table)
                + ("" if comparison is None else "\n" + comparison_markdown(comparison))
            ),
        )
    if "tex" in formats:
        write_text(folder / "results.tex", latex_report(summary))
    draw_diagrams(runs, table, folder / "diagrams")
    if "html" in formats:
        from calibench.html_report import write_html_report

        write_html_report(store, folder, summary, table, runs, None, comparison, mixing_samples)
    print_summary(header, rows, console or Console())
    (console or Console()).print(f"report written to {folder}")
    return folder
