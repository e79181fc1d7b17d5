"""Calibrators that are an affine map followed by softmax, fitted by validation NLL with L-BFGS
and analytic gradients: vector scaling (Guo et al. 2017), matrix scaling and Dirichlet
calibration with ODIR (Kull et al., NeurIPS 2019). Definitions: docs/calibrators.md."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calibench.evaluation.calibrators.base import Calibrator, register_calibrator
from calibench.settings import Ge

MAX_ITER = 1000
Iterations = Annotated[int, Ge(1)]
Penalty = Annotated[float, Ge(0)] | None


def nll_and_gradient(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL -log softmax(a)_y of calibrated logits ``a`` (N, K) and its gradient
    d NLL / d a = (softmax(a) - onehot(y)) / N."""
    rows = np.arange(len(labels))
    shifted = scores - scores.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    totals = probs.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(totals[:, 0]) - shifted[rows, labels]))
    probs /= totals
    probs[rows, labels] -= 1.0
    return loss, probs / len(labels)


def _minimise(objective, x0: np.ndarray, max_iter: int) -> np.ndarray:
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x


@register_calibrator("vector")
class VectorScaling(Calibrator):
    """softmax(w * z + b), w, b in R^K, minimising validation NLL from w = 1, b = 0
    (Guo et al., ICML 2017). Fitted: ``weight`` (K,), ``bias`` (K,)."""

    max_iter: Iterations = MAX_ITER

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        k = logits.shape[1]

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            loss, g = nll_and_gradient(logits * w + b, labels)
            return loss, np.concatenate([(g * logits).sum(axis=0), g.sum(axis=0)])

        theta = _minimise(objective, np.concatenate([np.ones(k), np.zeros(k)]), self.max_iter)
        self.weight, self.bias = theta[:k], theta[k:]

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(log_softmax(logits * self.weight + self.bias, axis=1))


# Per-entry penalties lambda / (K(K-1)) and mu / K used when reg_lambda / reg_mu are None: the
# medians of the values chosen by Kull et al.'s cross-validation for matrix scaling with ODIR
# (docs/calibrators.md, "Matrix scaling with ODIR").
OFF_DIAGONAL_PER_ENTRY = 2.5
INTERCEPT_PER_ENTRY = 0.01


class _OdirLinear(Calibrator):
    """softmax(W x + b) on features x of the logits, minimising validation
    NLL + lambda / (K(K-1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2 (ODIR, Kull et al. 2019)
    from W = I, b = 0. ``reg_lambda`` / ``reg_mu`` None means lambda = 2.5 K(K-1) and
    mu = 0.01 K. Fitted: ``weight`` (K, K), ``bias`` (K,), ``lambda_``, ``mu_``."""

    reg_lambda: Penalty
    reg_mu: Penalty
    max_iter: Iterations

    def features(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def penalties(self, k: int) -> tuple[float, float]:
        """(lambda, mu) of the ODIR term for ``k`` classes."""
        lam = OFF_DIAGONAL_PER_ENTRY * k * (k - 1) if self.reg_lambda is None else self.reg_lambda
        mu = INTERCEPT_PER_ENTRY * k if self.reg_mu is None else self.reg_mu
        return lam, mu

    def objective(
        self, theta: np.ndarray, x: np.ndarray, labels: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """ODIR objective and its gradient at flattened parameters ``theta`` = [W, b]."""
        k = x.shape[1]
        w, b = theta[: k * k].reshape(k, k), theta[k * k :]
        off = w - np.diag(np.diag(w))
        lam, mu = self.penalties(k)
        lam, mu = lam / (k * (k - 1)), mu / k
        loss, g = nll_and_gradient(x @ w.T + b, labels)
        loss += lam * float(np.sum(off**2)) + mu * float(b @ b)
        grad_w = g.T @ x + 2 * lam * off
        grad_b = g.sum(axis=0) + 2 * mu * b
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        x = self.features(logits)
        k = x.shape[1]
        # L-BFGS runs on (s W, b), s the RMS of the features, so that W and b have curvatures of
        # the same order; the optimum is the same.
        scale = np.concatenate([np.full(k * k, np.sqrt(np.mean(x**2)) or 1.0), np.ones(k)])

        def scaled_objective(t: np.ndarray) -> tuple[float, np.ndarray]:
            loss, grad = self.objective(t / scale, x, labels)
            return loss, grad / scale

        theta0 = np.concatenate([np.eye(k).ravel(), np.zeros(k)]) * scale
        theta = _minimise(scaled_objective, theta0, self.max_iter) / scale
        self.weight, self.bias = theta[: k * k].reshape(k, k), theta[k * k :]
        self.lambda_, self.mu_ = self.penalties(k)

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(log_softmax(self.features(logits) @ self.weight.T + self.bias, axis=1))


@register_calibrator("matrix_odir")
class MatrixScalingODIR(_OdirLinear):
    """Matrix scaling with ODIR: the affine map acts on the logits z (Kull et al. 2019)."""

    reg_lambda: Penalty = None
    reg_mu: Penalty = None
    max_iter: Iterations = MAX_ITER

    def features(self, logits: np.ndarray) -> np.ndarray:
        return logits


@register_calibrator("dirichlet_odir")
class DirichletODIR(_OdirLinear):
    """Dirichlet calibration with ODIR: the affine map acts on log p = log_softmax(z)
    (Kull et al. 2019)."""

    reg_lambda: Penalty = None
    reg_mu: Penalty = None
    max_iter: Iterations = MAX_ITER

    def features(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(logits, axis=1)
