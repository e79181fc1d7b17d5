"""Calibrators that are an affine map followed by softmax, fitted by penalised validation NLL:
vector scaling (Guo et al., ICML 2017), matrix scaling and Dirichlet calibration with ODIR (Kull
et al., NeurIPS 2019). The penalty strengths are chosen by cross-validation on the validation
split as Kull et al. do; a validation set that the unpenalised weights can separate, or one with
too few samples per class, is detected and said in ``warning``. Definitions:
docs/calibrators.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
from scipy.special import log_softmax

from calibench.evaluation.calibrators.affine import (
    AffineProblem,
    cross_validated_nll,
    fit_affine,
    separable,
)
from calibench.evaluation.calibrators.base import MIN_PER_CLASS, Calibrator, register_calibrator
from calibench.evaluation.calibrators.temperature import fit_temperature_nll
from calibench.settings import Constraint, Ge

MAX_ITER = 1000
CV_FOLDS = 5


@dataclass(frozen=True)
class Folds(Constraint):
    """Cross-validation folds: 0 (none) or at least 2."""

    def holds(self, value: Any) -> bool:
        return value == 0 or value >= 2

    def rule(self) -> str:
        return "0 (no cross-validation) or >= 2"


Iterations = Annotated[int, Ge(1)]
Penalty = Annotated[float, Ge(0)] | None
FoldCount = Annotated[int, Folds()]
OFF_DIAGONAL_PER_ENTRY = 2.5
INTERCEPT_PER_ENTRY = 0.01
"""Per-entry penalties used when cross-validation is off (``cv_folds=0``) or impossible (too few
samples per class): the medians of the values Kull et al.'s cross-validation chose for matrix
scaling with ODIR (docs/calibrators.md, "Matrix scaling with ODIR")."""


def strength_grid(k: int) -> np.ndarray:
    """Per-entry penalty strengths tried by cross-validation, strongest first: the powers of ten
    from 1e-5 (from 1e-2 with 100 or more classes) to 1e6, the decades of Kull et al.'s tuning
    script (dirichletcal/experiments_dnn, ``scripts/tune_cal_odir.py``)."""
    return 10.0 ** np.arange(6, -3 if k >= 100 else -6, -1)


class _AffineCalibrator(Calibrator):
    """softmax(W x + b) on features x of the logits, minimising validation NLL + lambda /
    (K(K-1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2 over the free entries (ODIR, Kull et al.
    2019) from W = I, b = 0. ``reg_lambda`` / ``reg_mu`` None: chosen by ``cv_folds``-fold
    cross-validation of the NLL on the validation split over :func:`strength_grid` (the same
    per-entry strength for both); with ``cv_folds=0``, or fewer than ``MIN_PER_CLASS`` samples
    in some class, the fixed medians instead. When the unpenalised weights alone separate the
    validation set (:func:`separable`) the NLL has no minimum: the map falls back to temperature
    scaling by NLL and says so; so does the map when cross-validation finds temperature scaling
    better than every strength. Fitted: ``weight``, ``bias``, ``lambda_``, ``mu_``, ``cv_nll_``
    (per-entry strength -> mean held-out NLL; empty without cross-validation) and
    ``cv_nll_temperature_`` (temperature scaling's, or None)."""

    min_per_class: ClassVar[int] = MIN_PER_CLASS
    reg_lambda: Penalty
    reg_mu: Penalty
    cv_folds: FoldCount
    max_iter: Iterations

    def features(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def free_entries(self, k: int) -> np.ndarray:
        """(K, K + 1) mask of the fitted entries of [W, b]."""
        raise NotImplementedError

    def penalty(self, k: int, lam: float, mu: float) -> np.ndarray:
        """Per-entry weights of the ODIR term: lambda / (K(K-1)) off the diagonal, mu / K on the
        intercept, 0 on the diagonal (only the free entries count)."""
        weights = np.full((k, k + 1), lam / (k * (k - 1)))
        np.fill_diagonal(weights, 0.0)
        weights[:, -1] = mu / k
        return np.where(self.free_entries(k), weights, 0.0)

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        x = self.features(logits)
        k = x.shape[1]
        free = self.free_entries(k)
        problem = AffineProblem(np.c_[x, np.ones(len(x))], labels, free, np.zeros(free.shape))
        start = np.c_[np.eye(k), np.zeros(k)]
        self.lambda_, self.mu_, fallback = self._strengths(problem, start, logits)
        problem.penalty = self.penalty(k, self.lambda_, self.mu_)
        theta, converged = (start, True) if fallback else fit_affine(problem, start, self.max_iter)
        # a separable set leaves the fit unconverged or with every sample right (docs)
        all_right = np.all(problem.scores(theta).argmax(axis=1) == labels)
        if not fallback and (all_right or not converged) and separable(problem):
            fallback = (
                f"separable: the unpenalised weights alone classify all {len(labels)} "
                "validation samples correctly, so the NLL has no minimum"
            )
        if fallback:
            t = fit_temperature_nll(logits, labels)
            self.warn(f"{fallback}; fell back to temperature scaling by NLL (T = {t:.3g})")
            theta = np.c_[np.eye(k) / t, np.zeros(k)]
        elif not converged:
            self.warn(
                f"diverged weights: no convergence in {self.max_iter} iterations "
                f"(largest |weight| {np.abs(theta[:, :-1]).max():.3g})"
            )
        self._store(theta)

    def _strengths(
        self, problem: AffineProblem, start: np.ndarray, logits: np.ndarray
    ) -> tuple[float, float, str]:
        """(lambda, mu, why to fall back to temperature scaling or ""): given, cross-validated
        against temperature scaling, or the fixed medians."""
        k = start.shape[0]
        scale = np.array([k * (k - 1), k], dtype=np.float64)
        given = np.array([np.nan if v is None else v for v in (self.reg_lambda, self.reg_mu)])
        self.cv_nll_: dict[float, float] = {}
        self.cv_nll_temperature_: float | None = None
        if not np.isnan(given).any():
            return float(given[0]), float(given[1]), ""
        defaults = np.array([OFF_DIAGONAL_PER_ENTRY, INTERCEPT_PER_ENTRY]) * scale
        fixed = np.where(np.isnan(given), defaults, given)
        fewest = np.bincount(problem.labels, minlength=k).min()
        if self.cv_folds == 0 or fewest < max(MIN_PER_CLASS, self.cv_folds):
            if self.cv_folds:
                self.warn("penalty strengths fixed at the defaults, not cross-validated")
            return float(fixed[0]), float(fixed[1]), ""
        grid = strength_grid(k)
        candidates = [np.where(np.isnan(given), s * scale, given) for s in grid]
        scores, baseline = cross_validated_nll(
            problem, start, [self.penalty(k, *c) for c in candidates], self.cv_folds,
            lambda train, y: _temperature_map(logits, train, y),
        )  # fmt: skip
        self.cv_nll_ = dict(zip(grid.tolist(), scores.tolist(), strict=True))
        self.cv_nll_temperature_ = baseline
        best = int(np.argmin(scores))
        chosen = candidates[best]
        why = ""
        if baseline < scores[best]:
            why = (
                f"cross-validation: temperature scaling's held-out NLL {baseline:.3g} beats "
                f"every penalty strength (best {scores[best]:.3g})"
            )
        return float(chosen[0]), float(chosen[1]), why

    def _store(self, theta: np.ndarray) -> None:
        self.weight, self.bias = theta[:, :-1], theta[:, -1]

    def _log_transform(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(self.features(logits) @ self.weight.T + self.bias, axis=1)

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(self._log_transform(logits))


@register_calibrator("vector")
class VectorScaling(_AffineCalibrator):
    """Vector scaling, softmax(w * z + b) with w, b in R^K (Guo et al., ICML 2017): the
    diagonal of matrix scaling, with the intercept penalty mu / K sum_j b_j^2 (``reg_mu``;
    there are no off-diagonal weights to penalise). Fitted: ``weight`` (K,), ``bias`` (K,)."""

    reg_lambda = 0.0  # fixed, not a hyperparameter: no annotation, so not a dataclass field
    reg_mu: Penalty = None
    cv_folds: FoldCount = CV_FOLDS
    max_iter: Iterations = MAX_ITER

    def features(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def free_entries(self, k: int) -> np.ndarray:
        return np.c_[np.eye(k, dtype=bool), np.ones(k, dtype=bool)]

    def _store(self, theta: np.ndarray) -> None:
        self.weight, self.bias = np.diag(theta[:, :-1]).copy(), theta[:, -1]

    def _log_transform(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(logits * self.weight + self.bias, axis=1)


@register_calibrator("matrix_odir")
class MatrixScalingODIR(_AffineCalibrator):
    """Matrix scaling with ODIR: the affine map acts on the logits z (Kull et al. 2019).
    Fitted: ``weight`` (K, K), ``bias`` (K,)."""

    reg_lambda: Penalty = None
    reg_mu: Penalty = None
    cv_folds: FoldCount = CV_FOLDS
    max_iter: Iterations = MAX_ITER

    def features(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def free_entries(self, k: int) -> np.ndarray:
        return np.ones((k, k + 1), dtype=bool)


@register_calibrator("dirichlet_odir")
class DirichletODIR(MatrixScalingODIR):
    """Dirichlet calibration with ODIR: the affine map acts on log p = log_softmax(z)
    (Kull et al. 2019). Fitted: ``weight`` (K, K), ``bias`` (K,)."""

    def features(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(logits, axis=1)


def _temperature_map(logits: np.ndarray, train: np.ndarray, labels: np.ndarray):
    """Temperature scaling by NLL fitted on the ``train`` rows of ``logits``, as a function
    from other row indices of the same logits to log-probabilities."""
    t = fit_temperature_nll(logits[train], labels)
    return lambda rows: log_softmax(logits[rows] / t, axis=1)
