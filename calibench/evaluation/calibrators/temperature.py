"""Temperature scaling, softmax(z / T), with T fitted by validation ECE or by validation NLL
(Guo et al., ICML 2017). Definitions: docs/calibrators.md."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from calibench.evaluation.calibrators.base import Calibrator, register_calibrator
from calibench.evaluation.metrics import N_BINS, fit_temperature_grid, fit_temperature_nll, softmax
from calibench.settings import Ge


class _TemperatureScaling(Calibrator):
    """softmax(z / T) with a fitted scalar T (the attribute ``temperature``)."""

    temperature: float | None = None

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature)


@register_calibrator("temperature")
class TemperatureScaling(_TemperatureScaling):
    """T in 0.1, 0.2, ..., 10.0 with the lowest validation ECE over ``n_bins`` equal-width bins,
    ties to the smallest T: the reference protocol
    (:func:`calibench.evaluation.metrics.fit_temperature_grid`)."""

    n_bins: Annotated[int, Ge(1)] = N_BINS

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.temperature = fit_temperature_grid(logits, labels, n_bins=self.n_bins)


@register_calibrator("temperature_nll")
class TemperatureScalingNLL(_TemperatureScaling):
    """T minimising validation NLL by L-BFGS over log T (Guo et al. 2017;
    :func:`calibench.evaluation.metrics.fit_temperature_nll`)."""

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.temperature = fit_temperature_nll(logits, labels)
