"""From saved logits to a result record: every metric before and after temperature scaling,
bootstrap intervals of the main ones, and OOD AUROC. Used both when a run finishes and when the
report rebuilds its tables from the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from calibench.evaluation.bootstrap import bootstrap_interval
from calibench.evaluation.metrics import (
    METRIC_TABLE,
    calibration_metrics,
    fit_temperature,
    metrics_in,
    ood_auroc,
    ood_auroc_of_probabilities,
    softmax,
)

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
    OOD set ``name``, ``ood_<name>_logits``. T is fitted on the VALIDATION logits only
    (docs/protocol.md, "Evaluation") and recorded; ``*_ts`` metrics are those of test logits / T.
    With ``intervals``, ``<metric>_low``/``<metric>_high`` bound a seeded percentile bootstrap
    95% interval over test samples of each of :data:`INTERVAL_METRICS` (and their ``_ts``)."""
    t = fit_temperature(logits["val_logits"], logits["val_labels"], temperature_fit, n_bins)
    test, labels = logits["test_logits"].astype(np.float64), logits["test_labels"]
    result: dict[str, Any] = dict(calibration_metrics(test, labels, n_bins))
    result.update({f"{k}_ts": v for k, v in calibration_metrics(test / t, labels, n_bins).items()})
    if intervals:
        for suffix, scaled in (("", test), ("_ts", test / t)):
            for name in INTERVAL_METRICS:
                low, high = bootstrap_interval(
                    name, scaled, labels, seed=INTERVAL_SEED, n_bins=n_bins
                )
                result[f"{name}{suffix}_low"], result[f"{name}{suffix}_high"] = low, high
    result.update(
        temperature=t,
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


Transform = Callable[[np.ndarray], np.ndarray]
"""Logits (N, K) -> calibrated probabilities (N, K)."""
PROBABILITY_FLOOR = 1e-12
"""Calibrated probabilities are clipped here before their log is taken (NLL stays finite when a
binning calibrator outputs 0 for the true class)."""
SHIFT_METRICS = metrics_in("shift")


def metrics_of_probabilities(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict:
    """Every metric of :func:`calibration_metrics` for calibrated probabilities, through their
    log (softmax(log p) = p), with p clipped at :data:`PROBABILITY_FLOOR`."""
    return calibration_metrics(np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0)), labels, n_bins)


def shift_rows(
    shifted: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]],
    transforms: dict[str, Transform],
    n_bins: int = 15,
) -> list[dict[str, Any]]:
    """One row per (corruption, severity, calibrator) with :data:`SHIFT_METRICS` of the shifted
    logits after that calibrator (fitted on the clean validation split beforehand, as Ovadia et
    al., NeurIPS 2019, prescribe)."""
    rows = []
    for (corruption, severity), (z, labels) in sorted(shifted.items()):
        for name, transform in transforms.items():
            metrics = metrics_of_probabilities(transform(z), labels, n_bins)
            rows.append(
                {
                    "corruption": corruption,
                    "severity": severity,
                    "calibrator": name,
                    **{m: metrics[m] for m in SHIFT_METRICS},
                }
            )
    return rows


CALIBRATOR_METRICS = metrics_in("calibrators")


def fit_calibrators(
    names: tuple[str, ...], val_logits: np.ndarray, val_labels: np.ndarray
) -> dict[str, Transform]:
    """``none`` (the plain softmax) and each named post-hoc calibrator fitted on the VALIDATION
    logits, as transforms to apply to test, shifted or OOD logits (docs/calibrators.md)."""
    from calibench.evaluation.calibrators import get_calibrator

    transforms: dict[str, Transform] = {"none": softmax}
    for name in names:
        transforms[name] = get_calibrator(name).fit(val_logits, val_labels).transform
    return transforms


def calibrator_rows(
    transforms: dict[str, Transform],
    logits: np.ndarray,
    labels: np.ndarray,
    n_bins: int = 15,
    ood: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One row per calibrator with :data:`CALIBRATOR_METRICS` of its calibrated test
    probabilities (matrix, vector, Dirichlet and the binning calibrators can change accuracy)
    and, per OOD set of ``ood`` (name -> logits), the AUROC of both OOD scores after it."""
    rows = []
    for name, transform in transforms.items():
        probs = transform(logits)
        metrics = metrics_of_probabilities(probs, labels, n_bins)
        row = {"calibrator": name, **{m: metrics[m] for m in CALIBRATOR_METRICS}}
        for ood_name, ood_logits in (ood or {}).items():
            for score, value in ood_auroc_of_probabilities(probs, transform(ood_logits)).items():
                row[f"ood_{ood_name}_{score}"] = value
        rows.append(row)
    return rows
