"""Dataset-shift tables and box plots, from the shift logits stored with each run
(docs/shift.md, "Protocol"; Ovadia et al., NeurIPS 2019, figure 2).

``shift.csv`` has one row per run x corruption x severity x calibrator; the markdown table
averages over corruptions per severity (then over seeds); the box plots show, per severity, the
spread of ECE over corruptions for each method.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from calibench.evaluation.record import SHIFT_METRICS, Transform, shift_rows  # noqa: E402
from calibench.evaluation.shift import read_shift_logits  # noqa: E402
from calibench.report.figures import save_figure  # noqa: E402
from calibench.spec import RunSpec  # noqa: E402
from calibench.store.files import RunDir  # noqa: E402

KEYS = ["dataset", "backbone", "method", "config_id", "seed", "run_id"]


def shift_table(
    runs: list[tuple[RunSpec, Path, dict[str, Transform]]],
    warn: Callable[[str], None] = print,
) -> pd.DataFrame:
    """One row per run x shifted set x corruption x severity x calibrator; ``runs`` holds each
    run's spec, folder and fitted calibrator transforms. A damaged shift file is skipped with a
    warning."""
    rows = []
    for spec, run_dir, transforms in runs:
        for set_name, path in RunDir(run_dir).shift_files().items():
            try:
                shifted = read_shift_logits(path)
            except (OSError, ValueError, KeyError) as exc:
                warn(f"skipped damaged shift file {path} ({type(exc).__name__})")
                continue
            ids = {**spec.keys(), "set": set_name}
            rows += [
                {**ids, **row} for row in shift_rows(shifted, transforms, spec.training.n_bins)
            ]
    return pd.DataFrame(rows)


def severity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over corruptions per (run, severity, calibrator), then mean and std over seeds."""
    per_run = (
        table.groupby([*KEYS, "set", "calibrator", "severity"])[list(SHIFT_METRICS)]
        .mean()
        .reset_index()
    )
    keys = ["set", "dataset", "backbone", "method", "config_id", "calibrator", "severity"]
    grouped = per_run.groupby(keys)[list(SHIFT_METRICS)]
    summary = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).reset_index()
    summary.insert(len(keys), "seeds", per_run.groupby(keys).size().to_numpy())
    return summary


def severity_markdown(summary: pd.DataFrame) -> str:
    """The per-severity table in percent (NLL plain), mean ± std over seeds."""

    def cell(row: pd.Series, metric: str) -> str:
        scale = 1 if metric == "nll" else 100
        mean, std = row[metric] * scale, row[f"{metric}_std"] * scale
        return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"

    header = ["set", "backbone", "method", "calibrator", "severity", *SHIFT_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in summary.iterrows():
        cells = [r["set"], r["backbone"], r["method"], r["calibrator"], str(r["severity"])]
        lines.append("| " + " | ".join([*cells, *(cell(r, m) for m in SHIFT_METRICS)]) + " |")
    return "\n".join(lines) + "\n"


def shift_box_plots(table: pd.DataFrame, folder: Path, metric: str = "ece") -> list[Path]:
    """One figure per shifted set, backbone and calibrator: per severity, a box per method of
    ``metric`` over the corruptions (mean over seeds first)."""
    folder.mkdir(parents=True, exist_ok=True)
    per_corruption = (
        table.groupby(["set", "backbone", "calibrator", "method", "severity", "corruption"])[metric]
        .mean()
        .reset_index()
    )
    paths = []
    for (name, backbone, calibrator), group in per_corruption.groupby(
        ["set", "backbone", "calibrator"]
    ):
        methods = sorted(group["method"].unique())
        severities = sorted(group["severity"].unique())
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(severities) * len(methods) / 2, 3.6))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            data = [
                100 * group[(group["method"] == method) & (group["severity"] == s)][metric]
                for s in severities
            ]
            positions = [s + (i - (len(methods) - 1) / 2) * width for s in severities]
            box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True)
            for patch in box["boxes"]:
                patch.set_facecolor(f"C{i % 10}")
            ax.plot([], [], color=f"C{i % 10}", linewidth=6, label=method)
        ax.set_xticks(severities, [str(s) for s in severities])
        ax.set_xlabel("severity")
        ax.set_ylabel(f"{metric.upper()} (%) over corruptions")
        ax.set_title(f"{name} | {backbone} | calibrator: {calibrator}", fontsize=9)
        ax.legend(fontsize=7, ncols=2)
        fig.tight_layout()
        path = folder / f"shift_{name}_{backbone.replace('/', '-')}_{calibrator}.png"
        save_figure(fig, path, ("png",))
        paths.append(path)
    return paths
