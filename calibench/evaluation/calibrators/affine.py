"""Fitting softmax(W x + b) on features x of the logits by penalised NLL: the machinery shared
by vector, matrix and Dirichlet scaling (calibench.evaluation.calibrators.linear). The map is
one matrix theta = [W, b] of shape (K, K + 1) acting on x~ = [x, 1]; ``free`` says which entries
are fitted (the others keep their start value), ``penalty`` holds the per-entry weight c of the
term c * theta^2 added to the mean NLL (ODIR, Kull et al., NeurIPS 2019). Up to
``NEWTON_MAX_PARAMETERS`` free entries the fit is Newton's method with a trust region and exact
Hessian-vector products (scipy's trust-ncg; Nocedal and Wright 2006, ch. 7), above it L-BFGS-B
(the same objective; a Newton step on 10,100 weights costs too many Hessian products).
:func:`separable` tells, by a linear programme, when the NLL has no minimum along the
unpenalised entries; :func:`cross_validated_nll` scores penalties, and a baseline map, on
held-out folds. Definitions: docs/calibrators.md."""

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
NEWTON_MAX_PARAMETERS = 2000
CV_MAX_ITER = 100
"""Iterations of each cross-validation fit (a fold the unpenalised weights separate would
otherwise run to the full limit)."""


@dataclass
class AffineProblem:
    """One penalised fit: ``features`` x~ (N, K + 1), bias column last; integer ``labels`` (N,);
    ``free`` (K, K + 1) the fitted entries; ``penalty`` (K, K + 1) the per-entry weights. When
    no off-diagonal weight is free (vector scaling) the scores are computed as x * diag(W) + b."""

    features: np.ndarray
    labels: np.ndarray
    free: np.ndarray
    penalty: np.ndarray

    def __post_init__(self) -> None:
        k = self.free.shape[0]
        self._onehot = np.eye(k)[self.labels]
        self._diagonal = not (self.free[:, :-1] & ~np.eye(k, dtype=bool)).any()
        self._cache: tuple[bytes, np.ndarray] | None = None

    def scores(self, theta: np.ndarray) -> np.ndarray:
        """x~ theta^T, (N, K)."""
        if self._diagonal:
            return self.features[:, :-1] * np.diag(theta[:, :-1]) + theta[:, -1]
        return self.features @ theta.T

    def _pull_back(self, residual: np.ndarray) -> np.ndarray:
        """residual^T x~ / N (K, K + 1): the gradient of mean_i sum_k residual_ik scores_ik."""
        if not self._diagonal:
            return residual.T @ self.features / len(self.labels)
        out = np.zeros(self.free.shape)
        out[:, :-1] = np.diag(np.sum(residual * self.features[:, :-1], axis=0))
        out[:, -1] = residual.sum(axis=0)
        return out / len(self.labels)

    def log_probs(self, theta: np.ndarray) -> np.ndarray:
        """log softmax(x~ theta^T), (N, K)."""
        return log_softmax(self.scores(theta), axis=1)

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
        self._cache = (theta.tobytes(), np.exp(log_p))
        n = len(self.labels)
        value = -log_p[np.arange(n), self.labels].mean() + np.sum(self.penalty * theta**2)
        gradient = self._pull_back(self._cache[1] - self._onehot) + 2 * self.penalty * theta
        return float(value), gradient[self.free]

    def hessian_product(self, theta: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """The Hessian of :meth:`value_and_gradient` times ``direction`` (free entries): with
        dA = x~ V^T, dR = p * dA - p (p . dA) row-wise, H v = dR^T x~ / N + 2 penalty * V."""
        p = self._probs(theta)
        v = np.zeros_like(theta)
        v[self.free] = direction
        d_scores = self.scores(v)
        d_residual = p * (d_scores - np.sum(p * d_scores, axis=1, keepdims=True))
        return (self._pull_back(d_residual) + 2 * self.penalty * v)[self.free]


def fit_affine(problem: AffineProblem, start: np.ndarray, max_iter: int) -> tuple[np.ndarray, bool]:
    """theta minimising ``problem``'s objective from ``start`` (at most ``max_iter``
    iterations): trust-region Newton-CG to gradient norm ``GTOL``, or L-BFGS-B (scipy's default
    tolerances) above ``NEWTON_MAX_PARAMETERS`` free entries. Returns theta and whether the
    optimiser converged."""

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        return problem.value_and_gradient(problem.full(start, x))

    if problem.free.sum() > NEWTON_MAX_PARAMETERS:
        # L-BFGS-B on (s W, b), s the RMS of the features: the same optimum, with curvatures of
        # W and b of the same order
        scale = np.ones(problem.free.shape)
        scale[:, :-1] = np.sqrt(np.mean(problem.features[:, :-1] ** 2)) or 1.0
        s = scale[problem.free]

        def scaled(u: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient = objective(u / s)
            return value, gradient / s

        result = minimize(scaled, start[problem.free] * s, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter})  # fmt: skip
        return problem.full(start, result.x / s), bool(result.success)
    result = minimize(
        objective,
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
    x, y, k = problem.features, problem.labels, problem.free.shape[0]
    sample, other = np.nonzero(np.arange(k)[None, :] != y[:, None])
    by_class = np.argsort(entries[:, 0], kind="stable")
    counts = np.bincount(entries[:, 0], minlength=k)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    blocks = []
    for cls, sign in ((other, 1.0), (y[sample], -1.0)):
        rows = np.repeat(np.arange(len(sample)), counts[cls])
        offset = np.arange(len(rows)) - np.repeat(np.cumsum(counts[cls]) - counts[cls], counts[cls])
        columns = by_class[np.repeat(first[cls], counts[cls]) + offset]
        blocks.append((sign * x[sample[rows], entries[columns, 1]], rows, columns))
    data, rows, columns = (np.concatenate(b) for b in zip(*blocks, strict=True))
    matrix = sparse.csr_array((data, (rows, columns)), shape=(len(sample), len(entries)))
    result = linprog(
        np.zeros(len(entries)),
        A_ub=matrix,
        b_ub=-np.ones(len(sample)),
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
        test = AffineProblem(problem.features[held], y_held, problem.free, problem.penalty)
        theta = start
        for c, penalty in enumerate(penalties):
            part = AffineProblem(problem.features[train], y_train, problem.free, penalty)
            theta, _ = fit_affine(part, theta, CV_MAX_ITER)
            scores[f, c] = -test.log_probs(theta)[np.arange(len(held)), y_held].mean()
        log_p = baseline(train, y_train)(held)
        scores[f, -1] = -log_p[np.arange(len(held)), y_held].mean()
    mean = scores.mean(axis=0)
    return mean[:-1], float(mean[-1])
