"""Ensemble temperature scaling, w1 softmax(z / T) + w2 softmax(z) + w3 / K (Zhang, Kailkhura
and Han, ICML 2020, "Mix-n-Match"). Definitions and fitting protocol: docs/calibrators.md."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calibench.evaluation.calibrators.base import Calibrator, register_calibrator
from calibench.evaluation.metrics import softmax

TEMPERATURE_BOUNDS = (0.05, 5.0)
TOLERANCE = 1e-12


def _temperature_objective(
    t: float, logits: np.ndarray, onehot: np.ndarray, loss: str
) -> tuple[float, float]:
    """Mean squared error (over N*K entries) or mean NLL of softmax(z / T), and d/dT."""
    logp = log_softmax(logits / t, axis=1)
    p = np.exp(logp)
    # d p_k / d T = -p_k (z_k - p.z) / T^2
    centred = logits - np.sum(p * logits, axis=1, keepdims=True)
    if loss == "mse":
        r = p - onehot
        dp_dt = -p * centred / t**2
        return float(np.mean(r**2)), float(2 * np.sum(r * dp_dt) / r.size)
    z_y = np.sum(onehot * centred, axis=1)
    return float(-np.mean(np.sum(onehot * logp, axis=1))), float(np.mean(z_y) / t**2)


def fit_ets_temperature(logits: np.ndarray, onehot: np.ndarray, loss: str) -> float:
    """T in [0.05, 5] minimising ``loss`` of softmax(z / T) by L-BFGS-B from T = 1."""
    result = minimize(
        lambda t: _temperature_objective(t[0], logits, onehot, loss),
        x0=np.ones(1),
        jac=True,
        method="L-BFGS-B",
        bounds=[TEMPERATURE_BOUNDS],
        tol=TOLERANCE,
    )
    return float(result.x[0])


def fit_simplex_weights(components: np.ndarray, onehot: np.ndarray, loss: str) -> np.ndarray:
    """Weights w >= 0, sum w = 1, of the mixture sum_j w_j components[j] (each (N, K))
    minimising the mean squared error (over N*K entries) or the mean NLL, by SLSQP from
    w = (1, 0, ..., 0)."""
    m = len(components)
    if loss == "mse":
        flat = components.reshape(m, -1)
        gram = flat @ flat.T / flat.shape[1]
        cross = flat @ onehot.ravel() / flat.shape[1]

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            return float(w @ gram @ w - 2 * cross @ w), 2 * (gram @ w - cross)

    else:
        q = np.sum(components * onehot, axis=2).T  # (N, m): each component's p_y

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            p_y = np.maximum(q @ w, np.finfo(np.float64).tiny)
            return float(-np.mean(np.log(p_y))), -np.mean(q / p_y[:, None], axis=0)

    result = minimize(
        objective,
        x0=np.eye(m)[0],
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones(m)},
        tol=TOLERANCE,
    )
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


@register_calibrator("ensemble_ts")
class EnsembleTemperatureScaling(Calibrator):
    """w1 softmax(z / T) + w2 softmax(z) + w3 / K with w on the simplex. T is fitted first
    (bounded to [0.05, 5]), then w with T fixed, both by ``loss``: ``mse`` (the squared error to
    the one-hot label, as the Mix-n-Match code does) or ``ce`` (NLL). Fitted: ``temperature``,
    ``weights`` (3,)."""

    loss: Literal["mse", "ce"] = "mse"

    def _components(self, logits: np.ndarray) -> np.ndarray:
        uniform = np.full(logits.shape, 1.0 / logits.shape[1])
        return np.stack([softmax(logits / self.temperature), softmax(logits), uniform])

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        onehot = np.eye(logits.shape[1])[labels]
        self.temperature = fit_ets_temperature(logits, onehot, self.loss)
        self.weights = fit_simplex_weights(self._components(logits), onehot, self.loss)

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return np.tensordot(self.weights, self._components(logits), axes=1)
