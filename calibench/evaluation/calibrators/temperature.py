"""Temperature scaling, softmax(z / T), with T fitted by validation ECE on the reference grid or
by validation NLL (Guo et al., ICML 2017). The ``*_ts`` columns of every result record come from
these calibrators (calibench.evaluation.record). Definitions: docs/calibrators.md."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calibench.errors import CalibenchError
from calibench.evaluation.calibrators.base import Calibrator, register_calibrator
from calibench.evaluation.metrics import N_BINS, ece, nll, softmax
from calibench.settings import Ge
from calibench.spec import TEMPERATURE_FITS

TEMPERATURE_GRID = np.round(np.arange(1, 101) * 0.1, 1)
"""The reference protocol's grid 0.1, 0.2, ..., 10.0 (Mukhoti et al., NeurIPS 2020, code
focal_calibration ``temperature_scaling.py``; kept for comparability with published numbers)."""
LOG_T_BOUNDS = (-5.0, 5.0)
"""Bounds of log T for the NLL fit, i.e. T in [0.0067, 148]."""


def fit_temperature_grid(
    logits: np.ndarray,
    labels: np.ndarray,
    grid: np.ndarray = TEMPERATURE_GRID,
    n_bins: int = N_BINS,
) -> float:
    """Temperature scaling, reference protocol: the T in ``grid`` (0.1, 0.2, ..., 10.0) with the
    lowest ECE of softmax(z / T) on VALIDATION logits (Guo et al. 2017; Mukhoti et al. 2020).
    Ties go to the smallest T."""
    logits = np.asarray(logits, dtype=np.float64)
    errors = [ece(softmax(logits / t), labels, n_bins) for t in grid]
    return float(grid[int(np.argmin(errors))])


def fit_temperature_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling by NLL: minimise mean -log softmax(z / T)_y over log T in
    :data:`LOG_T_BOUNDS` with L-BFGS-B on VALIDATION logits (Guo et al. 2017)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)

    def objective(log_t: np.ndarray) -> float:
        return nll(logits / np.exp(log_t[0]), labels)

    result = minimize(objective, x0=np.zeros(1), method="L-BFGS-B", bounds=[LOG_T_BOUNDS])
    return float(np.exp(result.x[0]))


class _TemperatureScaling(Calibrator):
    """softmax(z / T) with a fitted scalar T (the attribute ``temperature``); ``at_edge`` says
    whether T lies on an edge of the values the fit can reach."""

    temperature: float | None = None

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest T the fit can return."""
        raise NotImplementedError

    @property
    def at_edge(self) -> bool:
        """Whether the fitted T is the smallest or the largest T the fit can return: the best T
        may then lie outside them (docs/calibrators.md, "Temperature at an edge")."""
        low, high = self.bounds()
        t = self.fitted_temperature
        return bool(np.isclose(t, low) or np.isclose(t, high))

    @property
    def fitted_temperature(self) -> float:
        """``temperature``, which :meth:`fit` sets (it is None before)."""
        assert self.temperature is not None, "the temperature is read before the fit"
        return self.temperature

    def _flag_edge(self, what: str) -> None:
        if self.at_edge:
            low, high = self.bounds()
            side = "lowest" if np.isclose(self.fitted_temperature, low) else "highest"
            self.warn(
                f"grid edge: T = {self.temperature:.3g} is the {side} value of {what} "
                f"{low:.3g}..{high:.3g}; the best T may lie beyond it"
            )

    def scaled_logits(self, logits: np.ndarray) -> np.ndarray:
        """z / T in float64: the logits whose metrics are a record's ``*_ts`` columns."""
        return np.asarray(logits, dtype=np.float64) / self.fitted_temperature

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return softmax(self.scaled_logits(logits))

    def _log_transform(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(self.scaled_logits(logits), axis=1)


@register_calibrator("temperature")
class TemperatureScaling(_TemperatureScaling):
    """T in 0.1, 0.2, ..., 10.0 with the lowest validation ECE over ``n_bins`` equal-width bins,
    ties to the smallest T: the reference protocol (:func:`fit_temperature_grid`). A T on either
    end of the grid is flagged (``at_edge``, ``warning``)."""

    n_bins: Annotated[int, Ge(1)] = N_BINS

    def bounds(self) -> tuple[float, float]:
        return float(TEMPERATURE_GRID[0]), float(TEMPERATURE_GRID[-1])

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.temperature = fit_temperature_grid(logits, labels, n_bins=self.n_bins)
        self._flag_edge("the reference grid")


@register_calibrator("temperature_nll")
class TemperatureScalingNLL(_TemperatureScaling):
    """T minimising validation NLL by L-BFGS over log T in [-5, 5] (Guo et al. 2017;
    :func:`fit_temperature_nll`). A T on either bound is flagged (``at_edge``, ``warning``), and
    so is a validation set whose predictions are all right (the NLL then has no minimum)."""

    def bounds(self) -> tuple[float, float]:
        return float(np.exp(LOG_T_BOUNDS[0])), float(np.exp(LOG_T_BOUNDS[1]))

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.temperature = fit_temperature_nll(logits, labels)
        self._flag_edge("the bounds")
        if np.all(logits.argmax(axis=1) == labels):
            self.warn(
                f"separable: all {len(labels)} validation predictions are right, so the "
                f"validation NLL keeps falling as T -> 0; T = {self.temperature:.3g} is where "
                "the optimiser stopped"
            )


def temperature_calibrator(fit: str, n_bins: int = N_BINS) -> _TemperatureScaling:
    """The unfitted temperature calibrator of temperature fit ``fit`` (``ece_grid``: the
    reference grid by validation ECE over ``n_bins`` bins; ``nll``: validation NLL)."""
    if fit == "ece_grid":
        return TemperatureScaling(n_bins=n_bins)
    if fit == "nll":
        return TemperatureScalingNLL()
    raise CalibenchError(f"unknown temperature fit {fit!r}; choose from {TEMPERATURE_FITS}.")
