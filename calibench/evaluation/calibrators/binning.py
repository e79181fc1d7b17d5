"""One-vs-rest calibrators of the softmax probabilities, renormalised: isotonic regression
(Zadrozny and Elkan, KDD 2002) and histogram binning (Zadrozny and Elkan, ICML 2001).
Definitions: docs/calibrators.md."""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
from sklearn.isotonic import IsotonicRegression as _SklearnIsotonic

from calibench.evaluation.calibrators.base import (
    MIN_PER_CLASS,
    Calibrator,
    register_calibrator,
    renormalise,
)
from calibench.evaluation.metrics import N_BINS, calibration_bins, equal_width_edges, softmax
from calibench.settings import Ge


@register_calibrator("isotonic")
class IsotonicRegression(Calibrator):
    """For each class k, a non-decreasing map g_k of p_k = softmax(z)_k fitted to 1[y = k] by
    least squares (pool adjacent violators; scikit-learn, clipped to the fitted range outside
    it); the K outputs are renormalised to sum to 1. Fitted: ``regressors`` (K,)."""

    min_per_class: ClassVar[int] = MIN_PER_CLASS

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        probs = softmax(logits)
        self.regressors = [
            _SklearnIsotonic(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(
                probs[:, k], (labels == k).astype(np.float64)
            )
            for k in range(probs.shape[1])
        ]

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        probs = softmax(logits)
        scores = np.column_stack([g.predict(probs[:, k]) for k, g in enumerate(self.regressors)])
        return renormalise(scores)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value with bins (lo, hi], the first closed below: the assignment of
    :func:`calibench.evaluation.metrics.calibration_bins`."""
    return np.clip(np.searchsorted(edges, values, side="left") - 1, 0, len(edges) - 2)


@register_calibrator("histogram_binning")
class HistogramBinning(Calibrator):
    """For each class k, p_k = softmax(z)_k is replaced by the validation frequency of y = k
    among samples whose p_k falls in the same of ``n_bins`` equal-width bins of [0, 1] (a bin
    without validation samples keeps its midpoint); the K outputs are renormalised to sum to 1.
    Fitted: ``edges`` (n_bins + 1,), ``bin_values`` (K, n_bins)."""

    min_per_class: ClassVar[int] = MIN_PER_CLASS
    n_bins: Annotated[int, Ge(1)] = N_BINS

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        probs = softmax(logits)
        self.edges = equal_width_edges(self.n_bins)
        midpoints = (self.edges[:-1] + self.edges[1:]) / 2
        frequency = np.stack(
            [
                calibration_bins(probs[:, k], labels == k, self.edges).accuracy
                for k in range(probs.shape[1])
            ]
        )
        self.bin_values = np.where(np.isnan(frequency), midpoints, frequency)

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        probs = softmax(logits)
        index = bin_index(probs, self.edges)
        scores = np.take_along_axis(self.bin_values, index.T, axis=1).T
        return renormalise(scores)
