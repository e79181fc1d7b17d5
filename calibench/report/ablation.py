"""Ablations in the report: configurations of one method that differ in hyperparameters are
labelled by what differs, and each parameter varied one at a time (the others at the most
common value) gets a table and a figure of ECE and accuracy against it (docs/report.md)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from calibench.evaluation.metrics import metrics_in  # noqa: E402
from calibench.report.figures import save_figure  # noqa: E402

GROUP = ["dataset", "backbone", "method"]
ABLATION_METRICS = (*metrics_in("ablation"), "ece_ts")


def _settings(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its hyperparameters (and epochs) as columns."""
    configs = table.drop_duplicates("config_id").set_index("config_id")
    values = [
        dict(item.split("=", 1) for item in str(h).split()) if isinstance(h, str) else {}
        for h in configs["hparams"]
    ]
    settings = pd.DataFrame(values, index=configs.index)
    settings["epochs"] = configs["epochs"].astype(str)
    return settings.join(configs[GROUP])


def config_labels(table: pd.DataFrame) -> dict[str, str]:
    """config id -> a label: the method name, followed by the settings in which its
    configurations differ (``rankmixup_mrl (margin=0.5)``) when it has several."""
    settings = _settings(table)
    labels = {}
    for _, group in settings.groupby(GROUP):
        varied = [c for c in group.columns if c not in GROUP and group[c].nunique() > 1]
        named = {}
        for config_id, row in group.iterrows():
            extra = ", ".join(f"{c}={row[c]}" for c in varied)
            named[config_id] = f"{row['method']} ({extra})" if extra else row["method"]
        clash = pd.Series(named).duplicated(keep=False)
        for config_id, label in named.items():
            labels[config_id] = f"{label} [{config_id[:6]}]" if clash[config_id] else label
    return labels


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """For each method and each parameter it varies: one row per value, with the others at
    their most common value; mean and std over seeds of :data:`ABLATION_METRICS`."""
    settings = _settings(table)
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


def ablation_figures(ablation: pd.DataFrame, folder: Path) -> list[Path]:
    """One figure per (dataset, backbone, method, parameter): ECE (before and after TS) and
    accuracy against the parameter's value, mean ± std over seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (dataset, backbone, method, param), group in ablation.groupby([*GROUP, "parameter"]):
        x = [str(v) for v in group["value"]]
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.0))
        for metric, style in (("ece", "o-"), ("ece_ts", "s--")):
            left.errorbar(
                x, 100 * group[metric], yerr=100 * group[f"{metric}_std"].fillna(0), fmt=style,
                capsize=3, label=metric,
            )  # fmt: skip
        right.errorbar(x, 100 * group["acc"], yerr=100 * group["acc_std"].fillna(0), fmt="o-")
        left.set_ylabel("ECE (%)")
        left.legend(fontsize=8)
        right.set_ylabel("accuracy (%)")
        for ax in (left, right):
            ax.set_xlabel(param)
        fig.suptitle(f"{method} | {dataset} | {backbone}: {param}", fontsize=9)
        fig.tight_layout()
        path = folder / f"{dataset}_{backbone.replace('/', '-')}_{method}_{param}.png"
        save_figure(fig, path, ("png",))
        paths.append(path)
    return paths
