"""The array side of THE verdict rule (calibench.evaluation.compare, docs/statistics.md): a
randomised block design of k methods (treatments) by n seeds (blocks), pooled pairwise t-tests,
Holm's step-down and the best/tied marks. Every function takes a leading batch shape, so
scripts/verdict_power.py simulates the very rule that marks the tables."""

from __future__ import annotations

import numpy as np
from scipy import stats

from calibench.errors import CalibenchError


def block_anova(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Means and residual mean square of a randomised block design: ``values`` (..., k, n) holds
    k methods (treatments) by n seeds (blocks). Returns the method means (..., k), the residual
    mean square sum_{m,s} (v_ms - mean_m - mean_s + mean)^2 / df (...,) and df = (k-1)(n-1)
    (two-way ANOVA without interaction, Montgomery 2017, section 4.1)."""
    k, n = values.shape[-2:]
    df = (k - 1) * (n - 1)
    if df < 1:
        raise CalibenchError(f"a block design needs k >= 2 methods and n >= 2 seeds, got {k}, {n}.")
    residual = (
        values
        - values.mean(axis=-1, keepdims=True)
        - values.mean(axis=-2, keepdims=True)
        + values.mean(axis=(-2, -1), keepdims=True)
    )
    return values.mean(axis=-1), (residual**2).sum(axis=(-2, -1)) / df, df


def pairwise_t(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For every pair i < j (in ``np.triu_indices(k, 1)`` order) of the k methods of ``values``
    (..., k, n): the mean difference d = mean_i - mean_j, its t statistic d / sqrt(2 MSE / n)
    with the pooled residual mean square MSE of :func:`block_anova`, the two-sided p-value from
    Student's t with df = (k-1)(n-1), and df. With MSE = 0, p is 0 for d != 0 and 1 for d = 0."""
    means, mse, df = block_anova(values)
    n = values.shape[-1]
    first, second = np.triu_indices(values.shape[-2], 1)
    difference = means[..., first] - means[..., second]
    se = np.sqrt(2.0 * mse / n)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(difference == 0, 0.0, difference / se)
    return difference, t, 2.0 * stats.t.sf(np.abs(t), df), df


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values along the last axis: with p sorted ascending,
    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting where adj <= alpha keeps the
    family-wise error rate at alpha under any dependence between the tests."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.maximum.accumulate(np.minimum(ranked, 1.0), axis=-1)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def mark_codes(means: np.ndarray, significant: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Marks as codes (2 best, 1 tied, 0 none) for methods with ``means`` (..., k) and pairwise
    ``significant`` (..., k(k-1)/2, pairs in ``np.triu_indices`` order): the method with the
    best mean (the first on ties) is best when it differs significantly from every other;
    otherwise it and every method not significantly different from it are tied."""
    k = means.shape[-1]
    leader = np.argmin(means, axis=-1) if lower_is_better else np.argmax(means, axis=-1)
    first, second = np.triu_indices(k, 1)
    matrix = np.zeros((*means.shape, k), dtype=bool)
    matrix[..., first, second] = significant
    matrix[..., second, first] = significant
    separated = np.take_along_axis(matrix, leader[..., None, None], axis=-2)[..., 0, :]
    is_leader = np.arange(k) == leader[..., None]
    best = separated.sum(axis=-1) == k - 1
    others = np.where(best[..., None], 0, 1 - separated)
    return np.where(is_leader, np.where(best, 2, 1)[..., None], others)
