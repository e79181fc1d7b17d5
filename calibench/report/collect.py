"""From the store to the report's data: one row per complete run, every metric recomputed from
the logits saved with the run (the temperature refitted on its validation logits with the run's
recorded fit), and the mean and standard deviation over the seeds of each configuration.

Nothing is retrained, so a report can be rebuilt at any time from any machine that sees the
results folder. A run whose stored result cannot be used (a damaged file, or logits that are not
finite) is left out with a warning that names it and says what to do.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.evaluation.metrics import METRIC_NAMES, metrics_in
from calibench.evaluation.record import evaluate_logits
from calibench.spec import RunSpec, run_name
from calibench.store.files import RunDir
from calibench.store.index import Store

KEYS = ["method", "dataset", "backbone", "seed", "epochs"]
"""The columns that name a run in the per-run table."""
METRICS = [*METRIC_NAMES, "temperature", *(f"{m}_ts" for m in METRIC_NAMES)]
"""The per-run metric columns, in table order: every metric, T, every metric after TS."""
SUMMARY_BASE = metrics_in("summary")
SUMMARY = [*SUMMARY_BASE, "temperature", *(f"{m}_ts" for m in SUMMARY_BASE)]
"""The summary's metric columns (before the OOD ones), in table order."""
CONFIG_KEYS = ["dataset", "backbone", "method", "config_id"]
Warn = Callable[[str], None]


class StoredRun(NamedTuple):
    """A complete run as the report sees it: its file name stem, spec and stored logits."""

    name: str
    spec: RunSpec
    logits: dict[str, np.ndarray]


def load_run(run: dict[str, Any]) -> tuple[RunSpec, dict[str, np.ndarray]]:
    """A complete run's spec and saved logits (``run`` is a row of
    :meth:`calibench.store.index.Store.runs`); a damaged run folder is a clear error."""
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


def non_finite_arrays(logits: dict[str, np.ndarray]) -> list[str]:
    """The names of the stored logit arrays that hold a NaN or an infinite value."""
    return [
        name
        for name, values in sorted(logits.items())
        if name.endswith("_logits") and not np.all(np.isfinite(values))
    ]


def _usable(run: dict[str, Any], warn: Warn) -> StoredRun | None:
    """The stored run, or None (with a warning naming it and what to do) when its result
    cannot be used."""
    if run.get("damaged"):
        warn(
            f"run folder {run['dir']} is damaged ({run['damaged']}); left out. "
            "`calibench run` recomputes it."
        )
        return None
    try:
        spec, logits = load_run(run)
    except CalibenchError as exc:
        warn(f"{exc} Left out of this report.")
        return None
    bad = non_finite_arrays(logits)
    if bad:
        warn(
            f"run {spec.method} / {spec.dataset} / {spec.backbone} / seed {spec.seed} "
            f"(run id {spec.run_id}, folder {run['dir']}) has NaN or infinite values in "
            f"{', '.join(bad)}; left out of this report. Its training diverged or its logits "
            "were written by faulty code: read its log.csv, then retrain it (the same "
            "`calibench run` with --force, e.g. with a lower training.lr) or delete its folder."
        )
        return None
    return StoredRun(run_name(spec), spec, logits)


def run_row(spec: RunSpec, logits: dict[str, np.ndarray]) -> dict[str, Any]:
    """One row of the per-run table: the run's keys and every number of
    :func:`calibench.evaluation.record.evaluate_logits` recomputed from its logits."""
    metrics = evaluate_logits(logits, spec.training.temperature_fit, spec.training.n_bins)
    return {
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


def collect(store: Store, warn: Warn | None = None) -> tuple[pd.DataFrame, list[StoredRun]]:
    """One row per usable complete run with every metric recomputed from its logits, and the
    runs themselves. A run whose stored result is damaged or not finite is left out with a
    warning (docs/reliability.md); no usable run at all is an error."""
    rows, runs = [], []
    for run in store.runs():
        if run["status"] != "complete" and not run.get("damaged"):
            continue
        stored = _usable(run, warn or print)
        if stored is None:
            continue
        rows.append(run_row(stored.spec, stored.logits))
        runs.append(stored)
    if not rows:
        raise CalibenchError(f"no complete runs in {store.root}. Run `calibench run` first.")
    return pd.DataFrame(rows), runs


def config_settings(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its hyperparameters (and epochs) as columns."""
    configs = table.drop_duplicates("config_id").set_index("config_id")
    values = [
        dict(item.split("=", 1) for item in str(h).split()) if isinstance(h, str) else {}
        for h in configs["hparams"]
    ]
    settings = pd.DataFrame(values, index=configs.index)
    settings["epochs"] = configs["epochs"].astype(str)
    return settings.join(configs[["dataset", "backbone", "method"]])


def config_labels(table: pd.DataFrame) -> dict[str, str]:
    """config id -> a label: the method name, followed by the settings in which its
    configurations differ (``rankmixup_mrl (margin=0.5)``) when it has several."""
    settings = config_settings(table)
    group_keys = ["dataset", "backbone", "method"]
    labels = {}
    for _, group in settings.groupby(group_keys):
        varied = [c for c in group.columns if c not in group_keys and group[c].nunique() > 1]
        named = {}
        for config_id, row in group.iterrows():
            extra = ", ".join(f"{c}={row[c]}" for c in varied)
            named[config_id] = f"{row['method']} ({extra})" if extra else row["method"]
        clash = pd.Series(named).duplicated(keep=False)
        for config_id, label in named.items():
            labels[config_id] = f"{label} [{config_id[:6]}]" if clash[config_id] else label
    return labels


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over the seeds of each configuration (runs that
    differ only by seed). When one method has several configurations in the store (other
    epochs or hyperparameters), its rows are told apart by their config id."""
    columns = [c for c in SUMMARY if c in table.columns]
    columns += sorted(c for c in table.columns if c.startswith("ood_"))
    grouped = table.groupby(CONFIG_KEYS, sort=True)
    summary = grouped[columns].mean().join(grouped[columns].std(ddof=1).add_suffix("_std"))
    summary.insert(0, "seeds", grouped.size())
    summary.insert(0, "epochs", grouped["epochs"].first())
    summary = summary.reset_index()
    summary["method"] = summary["config_id"].map(config_labels(table))
    return summary


def bins_caption(table: pd.DataFrame) -> str:
    """The bin counts of the runs in ``table``, for captions (e.g. "15 bins")."""
    counts = sorted({int(n) for n in table["n_bins"]})
    return " or ".join(map(str, counts)) + (" bin" if counts == [1] else " bins")
