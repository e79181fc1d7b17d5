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

from calibench.config import RunSpec
from calibench.errors import CalibenchError
from calibench.evaluation import evaluate_logits
from calibench.metrics import calibration_bins, equal_width_edges, softmax, top_label
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
FORMATS = ("md", "csv", "tex")


def load_run(run: dict[str, Any]) -> tuple[RunSpec, dict[str, np.ndarray]]:
    """A complete run's spec and saved logits; a damaged run folder is a clear error."""
    try:
        spec = RunSpec.from_dict(json.loads((run["dir"] / "config.json").read_text()))
        with np.load(run["dir"] / "logits.npz") as f:
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


def _md(cell: str) -> str:
    """A markdown table cell, its pipes escaped (brackets such as ``ce [5c5a48]`` are text in
    markdown unless a link definition follows, which a report never writes)."""
    return cell.replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("±", r"$\pm$").replace("%", r"\%")

    body = [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    return (
        "\n".join(
            [
                r"\begin{tabular}{" + "l" * 3 + "r" * (len(header) - 3) + "}",
                r"\toprule",
                " & ".join(esc(h) for h in header) + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
            ]
        )
        + "\n"
    )


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


def build_report(
    store: Store, formats: tuple[str, ...] = ("md", "csv"), console: Console | None = None
) -> Path:
    """Write ``<output>/report/``: results.csv (fractions), results.md (percent), results.tex
    when asked, and reliability diagrams; print the summary table. Returns the folder."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CalibenchError(
            f"unknown report format {', '.join(bad)}. Valid: {', '.join(FORMATS)}."
        )
    say = console or Console()
    table, runs = collect(
        store, lambda m: say.print(f"warning: {m}", markup=False, highlight=False, soft_wrap=True)
    )
    summary = summarise(table)
    folder = store.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    header, rows = summary_cells(summary)
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
            ),
        )
    if "tex" in formats:
        write_text(folder / "results.tex", latex_table(header, rows))
    draw_diagrams(runs, table, folder / "diagrams")
    print_summary(header, rows, console or Console())
    (console or Console()).print(f"report written to {folder}")
    return folder
