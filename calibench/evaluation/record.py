"""From saved logits to a result record: every metric before and after temperature scaling,
bootstrap intervals of the main ones, and OOD AUROC; and the rows of the post-hoc calibrator and
dataset-shift tables. Used both when a run finishes and when the report rebuilds its tables from
the store."""

from __future__ import annotations

from typing import Any

import numpy as np

from calibench.evaluation.bootstrap import bootstrap_interval
from calibench.evaluation.calibrators import get_calibrator
from calibench.evaluation.calibrators.base import Calibrator, Uncalibrated
from calibench.evaluation.calibrators.temperature import temperature_calibrator
from calibench.evaluation.metrics import METRIC_TABLE, calibration_metrics, metrics_in
from calibench.evaluation.ood import ood_auroc, ood_auroc_of_probabilities

BINNING = {m.name: m.binning for m in METRIC_TABLE if m.binning}
INTERVAL_METRICS = metrics_in("interval")
"""Metrics that get a bootstrap 95% interval over test samples (docs/statistics.md)."""
INTERVAL_SEED = 0


def evaluate_logits(
    logits: dict[str, np.ndarray],
    temperature_fit: str = "ece_grid",
    n_bins: int = 15,
    intervals: bool = True,
) -> dict[str, Any]:
    """Metrics of the test logits before and after temperature scaling.

    ``logits`` holds ``val_logits``, ``val_labels``, ``test_logits``, ``test_labels`` and, per
    OOD set ``name``, ``ood_<name>_logits``. T comes from the temperature calibrator of
    ``temperature_fit`` fitted on the VALIDATION logits only (docs/protocol.md, "Evaluation")
    and is recorded with ``temperature_at_edge`` (T on an edge of its grid or bounds);
    ``*_ts`` metrics are those of test logits / T. With ``intervals``,
    ``<metric>_low``/``<metric>_high`` bound a seeded percentile bootstrap 95% interval over
    test samples of each of :data:`INTERVAL_METRICS` (and their ``_ts``)."""
    scaling = temperature_calibrator(temperature_fit, n_bins)
    scaling.fit(logits["val_logits"], logits["val_labels"])
    t = scaling.fitted_temperature
    test, labels = logits["test_logits"].astype(np.float64), logits["test_labels"]
    scaled = scaling.scaled_logits(test)
    result: dict[str, Any] = dict(calibration_metrics(test, labels, n_bins))
    result.update({f"{k}_ts": v for k, v in calibration_metrics(scaled, labels, n_bins).items()})
    if intervals:
        for suffix, z in (("", test), ("_ts", scaled)):
            for name in INTERVAL_METRICS:
                low, high = bootstrap_interval(name, z, labels, seed=INTERVAL_SEED, n_bins=n_bins)
                result[f"{name}{suffix}_low"], result[f"{name}{suffix}_high"] = low, high
    result.update(
        temperature=t,
        temperature_at_edge=scaling.at_edge,
        temperature_fit=temperature_fit,
        n_bins=n_bins,
        binning=BINNING,
        n_test=int(len(labels)),
    )
    for key in sorted(logits):
        if key.startswith("ood_") and key.endswith("_logits"):
            name = key[len("ood_") : -len("_logits")]
            for suffix, temp in (("", 1.0), ("_ts", t)):
                for score, value in ood_auroc(test, logits[key], temp).items():
                    result[f"ood_{name}_{score}{suffix}"] = value
    return result


Transform = Calibrator
"""A fitted calibrator, as the calibrator and shift tables use it: ``transform`` (probabilities),
``log_transform`` (their logarithm, exact where the calibrator has it) and ``warning``."""
PROBABILITY_FLOOR = 1e-12
"""A calibrated probability of exactly 0 for a sample's true class is replaced by this before
the NLL is taken, and the row's warning says how often (docs/calibrators.md, "Warnings")."""
SHIFT_METRICS = metrics_in("shift")
CALIBRATOR_METRICS = metrics_in("calibrators")


def metrics_of_log_probabilities(
    log_probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> tuple[dict, str]:
    """Every metric of :func:`calibration_metrics` for calibrated probabilities given by their
    logarithm (softmax(log p) = p, and the NLL is -log p_y itself), and a warning. Where the
    true class has probability exactly 0 (log p = -inf) the NLL would be infinite: those
    entries become log :data:`PROBABILITY_FLOOR`, and the warning counts them ("" when none)."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels)
    zero = np.isneginf(log_probs[np.arange(len(labels)), labels])
    warning = ""
    if zero.any():
        warning = (
            f"probabilities floored: {int(zero.sum())} of {len(labels)} samples give their true "
            f"class probability 0; their NLL term uses {PROBABILITY_FLOOR:g} instead"
        )
    floored = np.where(np.isneginf(log_probs), np.log(PROBABILITY_FLOOR), log_probs)
    return calibration_metrics(floored, labels, n_bins), warning


def metrics_of_probabilities(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict:
    """:func:`metrics_of_log_probabilities` of probabilities (their log taken here; exact zeros
    floored at :data:`PROBABILITY_FLOOR`), without the warning."""
    with np.errstate(divide="ignore"):
        return metrics_of_log_probabilities(np.log(probs), labels, n_bins)[0]


def calibrated_metrics(
    calibrator: Transform, logits: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> tuple[dict, str]:
    """The metrics of ``calibrator``'s outputs on ``logits`` from its log-probabilities, and its
    warning: the fit's own (``calibrator.warning``) joined with any floored probabilities."""
    metrics, floored = metrics_of_log_probabilities(
        calibrator.log_transform(logits), labels, n_bins
    )
    return metrics, "; ".join(w for w in (calibrator.warning, floored) if w)


def shift_rows(
    shifted: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]],
    transforms: dict[str, Transform],
    n_bins: int = 15,
) -> list[dict[str, Any]]:
    """One row per (corruption, severity, calibrator) with :data:`SHIFT_METRICS` of the shifted
    logits after that calibrator (fitted on the clean validation split beforehand, as Ovadia et
    al., NeurIPS 2019, prescribe) and its ``warning``."""
    rows = []
    for (corruption, severity), (z, labels) in sorted(shifted.items()):
        for name, calibrator in transforms.items():
            metrics, warning = calibrated_metrics(calibrator, z, labels, n_bins)
            rows.append(
                {
                    "corruption": corruption,
                    "severity": severity,
                    "calibrator": name,
                    **{m: metrics[m] for m in SHIFT_METRICS},
                    "warning": warning,
                }
            )
    return rows


def fit_calibrators(
    names: tuple[str, ...], val_logits: np.ndarray, val_labels: np.ndarray
) -> dict[str, Transform]:
    """``none`` (the plain softmax) and each named post-hoc calibrator fitted on the VALIDATION
    logits, to apply to test, shifted or OOD logits (docs/calibrators.md)."""
    fitted: dict[str, Transform] = {"none": Uncalibrated().fit(val_logits, val_labels)}
    for name in names:
        fitted[name] = get_calibrator(name).fit(val_logits, val_labels)
    return fitted


def calibrator_rows(
    transforms: dict[str, Transform],
    logits: np.ndarray,
    labels: np.ndarray,
    n_bins: int = 15,
    ood: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One row per calibrator with :data:`CALIBRATOR_METRICS` of its calibrated test
    probabilities (matrix, vector, Dirichlet and the binning calibrators can change accuracy),
    its ``warning`` ("" when the fit is sound, docs/calibrators.md) and, per OOD set of ``ood``
    (name -> logits), the AUROC of both OOD scores after it."""
    rows = []
    for name, calibrator in transforms.items():
        metrics, warning = calibrated_metrics(calibrator, logits, labels, n_bins)
        row = {"calibrator": name, **{m: metrics[m] for m in CALIBRATOR_METRICS}}
        probs = calibrator.transform(logits)
        for ood_name, ood_logits in (ood or {}).items():
            scores = ood_auroc_of_probabilities(probs, calibrator.transform(ood_logits))
            for score, value in scores.items():
                row[f"ood_{ood_name}_{score}"] = value
        rows.append({**row, "warning": warning})
    return rows
