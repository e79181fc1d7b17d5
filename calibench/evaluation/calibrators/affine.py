"""Fitting softmax(W x + b) on features x of the logits by penalised NLL: the machinery shared
by vector, matrix and Dirichlet scaling (calibench.evaluation.calibrators.linear). The map is
one matrix theta = [W, b] of shape (K, F + 1) acting on x~ = [x, 1]; ``free`` says which entries
are fitted (the others keep their start value), ``penalty`` holds the per-entry weight c of the
term c * theta^2 added to the mean NLL (ODIR, Kull et al., NeurIPS 2019). The fit is Newton's
method with a trust region and Hessian-vector products (scipy's trust-ncg; Nocedal and Wright
2006, ch. 7); :func:`separable` tells, by a linear programme, when the NLL has no minimum along
the unpenalised entries; :func:`cross_validated_nll` scores penalties, and a baseline map, on
held-out folds.
Definitions: docs/calibrators.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog, minimize
from scipy.special import log_softmax
from sklearn.model_selection import StratifiedKFold

GTOL = 1e-7
"""Gradient norm at which the Newton fit stops."""
CV_MAX_ITER = 100
"""Iterations of each cross-validation fit (a fold the unpenalised weights separate would
otherwise run to the full limit)."""


@dataclass
class AffineProblem:
    """One penalised fit: ``features`` x~ (N, F + 1), bias column last; integer ``labels`` (N,);
    ``free`` (K, F + 1) the fitted entries; ``penalty`` (K, F + 1) the per-entry weights."""

    features: np.ndarray
    labels: np.ndarray
    free: np.ndarray
    penalty: np.ndarray

    def __post_init__(self) -> None:
        self._onehot = np.eye(self.free.shape[0])[self.labels]
        self._cache: tuple[bytes, np.ndarray] | None = None

    def log_probs(self, theta: np.ndarray) -> np.ndarray:
        """log softmax(x~ theta^T), (N, K)."""
        return log_softmax(self.features @ theta.T, axis=1)

    def full(self, start: np.ndarray, x: np.ndarray) -> np.ndarray:
        """theta with the free entries set to ``x`` and the others from ``start``."""
        theta = start.copy()
        theta[self.free] = x
        return theta

    def _probs(self, theta: np.ndarray) -> np.ndarray:
        key = theta.tobytes()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, np.exp(self.log_probs(theta)))
        return self._cache[1]

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean NLL + sum penalty * theta^2, and its gradient on the free entries:
        (softmax - onehot)^T x~ / N + 2 penalty * theta."""
        log_p = self.log_probs(theta)
        n = len(self.labels)
        value = -log_p[np.arange(n), self.labels].mean() + np.sum(self.penalty * theta**2)
        residual = self._probs(theta) - self._onehot
        gradient = residual.T @ self.features / n + 2 * self.penalty * theta
        return float(value), gradient[self.free]

    def hessian_product(self, theta: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """The Hessian of :meth:`value_and_gradient` times ``direction`` (free entries): with
        dA = x~ V^T, dR = p * dA - p (p . dA) row-wise, H v = dR^T x~ / N + 2 penalty * V."""
        p = self._probs(theta)
        v = np.zeros_like(theta)
        v[self.free] = direction
        d_scores = self.features @ v.T
        d_residual = p * (d_scores - np.sum(p * d_scores, axis=1, keepdims=True))
        product = d_residual.T @ self.features / len(self.labels) + 2 * self.penalty * v
        return product[self.free]


def fit_affine(problem: AffineProblem, start: np.ndarray, max_iter: int) -> tuple[np.ndarray, bool]:
    """theta minimising ``problem``'s objective from ``start`` by trust-region Newton-CG
    (at most ``max_iter`` iterations, gradient norm ``GTOL``); returns theta and whether the
    optimiser converged."""
    result = minimize(
        lambda x: problem.value_and_gradient(problem.full(start, x)),
        start[problem.free],
        jac=True,
        hessp=lambda x, v: problem.hessian_product(problem.full(start, x), v),
        method="trust-ncg",
        options={"maxiter": max_iter, "gtol": GTOL},
    )
    return problem.full(start, result.x), bool(result.success)


def separable(problem: AffineProblem) -> bool:
    """Whether the free, unpenalised entries alone can classify every sample correctly with a
    margin: some theta on them with (x~ theta^T)_{i, y_i} - (x~ theta^T)_{i, k} >= 1 for every
    sample i and class k != y_i (a feasibility linear programme, HiGHS). Then scaling that theta
    up drives the NLL to 0 at no penalty: the objective has no minimum and the weights grow
    without bound (Albert and Anderson, Biometrika 1984)."""
    entries = np.argwhere(problem.free & (problem.penalty == 0))
    if len(entries) == 0:
        return False
    x, y = problem.features, problem.labels
    k = problem.free.shape[0]
    rows, other = np.nonzero(np.arange(k)[None, :] != y[:, None])
    constraint = np.arange(len(rows))
    parts = []
    for column, (cls, feature) in enumerate(entries):
        value = x[rows, feature] * ((other == cls).astype(float) - (y[rows] == cls))
        keep = value != 0
        parts.append((value[keep], constraint[keep], np.full(keep.sum(), column)))
    data, row_index, col_index = (np.concatenate(p) for p in zip(*parts, strict=True))
    matrix = sparse.csr_array((data, (row_index, col_index)), shape=(len(rows), len(entries)))
    result = linprog(
        np.zeros(len(entries)),
        A_ub=matrix,
        b_ub=-np.ones(len(rows)),
        bounds=(None, None),
        method="highs",
    )
    return result.status == 0


def cross_validated_nll(
    problem: AffineProblem,
    start: np.ndarray,
    penalties: list[np.ndarray],
    folds: int,
    baseline: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]],
) -> tuple[np.ndarray, float]:
    """Mean held-out NLL of each of ``penalties``, and of ``baseline``, over ``folds``
    stratified folds (shuffled, seed 0) of ``problem``'s samples. The penalised fits run in the
    order given, each warm-started from the previous one's theta on the same fold (pass the
    strongest penalty first), for at most ``CV_MAX_ITER`` iterations. ``baseline(train rows,
    train labels)`` returns a function from held-out rows to log-probabilities."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    scores = np.zeros((folds, len(penalties) + 1))
    rows = np.arange(len(problem.labels))
    for f, (train, held) in enumerate(splitter.split(rows, problem.labels)):
        y_train, y_held = problem.labels[train], problem.labels[held]
        theta = start
        for c, penalty in enumerate(penalties):
            part = AffineProblem(problem.features[train], y_train, problem.free, penalty)
            theta, _ = fit_affine(part, theta, CV_MAX_ITER)
            log_p = log_softmax(problem.features[held] @ theta.T, axis=1)
            scores[f, c] = -log_p[np.arange(len(held)), y_held].mean()
        log_p = baseline(train, y_train)(held)
        scores[f, -1] = -log_p[np.arange(len(held)), y_held].mean()
    mean = scores.mean(axis=0)
    return mean[:-1], float(mean[-1])
