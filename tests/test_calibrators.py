"""Post-hoc calibrators: each checked against a known answer, an independent implementation
(netcal, torch autograd, brute force) or a property of its definition (docs/calibrators.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import check_grad
from scipy.special import log_softmax, softmax

from calibench import CalibenchError
from calibench.evaluation.calibrators import (
    Calibrator,
    calibrator_fields,
    get_calibrator,
    list_calibrators,
    register_calibrator,
    renormalise,
)
from calibench.evaluation.calibrators.affine import AffineProblem, separable
from calibench.evaluation.calibrators.base import Uncalibrated
from calibench.evaluation.calibrators.ensemble import _temperature_objective
from calibench.evaluation.calibrators.linear import strength_grid
from calibench.evaluation.calibrators.temperature import (
    TEMPERATURE_GRID,
    fit_temperature_grid,
    temperature_calibrator,
)
from calibench.evaluation.metrics import accuracy, ece
from calibench.evaluation.record import (
    PROBABILITY_FLOOR,
    calibrated_metrics,
    calibrator_rows,
    fit_calibrators,
    metrics_of_log_probabilities,
    metrics_of_probabilities,
)
from calibench.registry import CALIBRATORS
from calibench.spec import TEMPERATURE_FITS

BUILT_IN = [
    "dirichlet_odir",
    "ensemble_ts",
    "histogram_binning",
    "isotonic",
    "matrix_odir",
    "temperature",
    "temperature_nll",
    "vector",
]
NLL_FITTED = ["temperature_nll", "vector", "matrix_odir", "dirichlet_odir"]
ARGMAX_PRESERVING = ["temperature", "temperature_nll", "ensemble_ts"]


def sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from the row's categorical distribution."""
    return (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)


def overconfident(n: int = 1500, k: int = 5, temperature: float = 2.0, seed: int = 0):
    """Logits z whose labels follow softmax(z / temperature): calibrated at T = temperature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    return z, sample_labels(softmax(z / temperature, axis=1), rng)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


# --- registry and contract -------------------------------------------------------------------


def test_every_builtin_is_registered() -> None:
    assert set(BUILT_IN) <= set(list_calibrators())
    assert list_calibrators("temperature*") == ["temperature", "temperature_nll"]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(CalibenchError, match="unknown calibrator 'platt'.*matrix_odir.*vector"):
        get_calibrator("platt")


@pytest.mark.parametrize(
    ("name", "hyperparameters", "message"),
    [
        ("temperature", {"bins": 10}, "calibrator temperature has no hyperparameter bins"),
        ("histogram_binning", {"n_bins": "15"}, "n_bins must be an integer, got '15'"),
        ("histogram_binning", {"n_bins": 0}, "n_bins must be >= 1"),
        ("matrix_odir", {"reg_lambda": -1.0}, "reg_lambda must be >= 0"),
        ("dirichlet_odir", {"reg_mu": True}, "reg_mu must be a finite number"),
        ("ensemble_ts", {"loss": "brier"}, "loss must be one of 'mse', 'ce'"),
        ("vector", {"max_iter": 0}, "max_iter must be >= 1"),
        ("matrix_odir", {"cv_folds": 1}, "cv_folds must be 0 \\(no cross-validation\\) or >= 2"),
    ],
)
def test_bad_hyperparameter_is_a_clear_error(name: str, hyperparameters: dict, message: str):
    with pytest.raises(CalibenchError, match=message):
        get_calibrator(name, **hyperparameters)


def test_hyperparameters_are_coerced_and_listed() -> None:
    calibrator = get_calibrator("matrix_odir", reg_lambda=3, reg_mu=None)
    assert calibrator.reg_lambda == 3.0 and isinstance(calibrator.reg_lambda, float)
    assert calibrator.hyperparameters() == {
        "reg_lambda": 3.0,
        "reg_mu": None,
        "cv_folds": 5,
        "max_iter": 1000,
    }
    assert "reg_lambda" not in calibrator_fields("vector")
    assert calibrator_fields("histogram_binning") == {"n_bins": (int, 15)}


@pytest.mark.parametrize("name", BUILT_IN)
def test_transform_before_fit_is_an_error(name: str) -> None:
    with pytest.raises(CalibenchError, match=f"calibrator {name}: transform called before fit"):
        get_calibrator(name).transform(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((4, 3)), np.array([0.0, 1.0, 2.0, 0.0]), "integer labels"),
        (np.zeros((4, 3)), np.array([0, 1, 3, 0]), r"labels must lie in \[0, 2\]"),
        (np.zeros((4, 3)), np.array([0, 1]), "shape \\(4,\\)"),
        (np.zeros(4), np.array([0, 1, 2, 0]), "logits of shape \\(N, K\\)"),
        (np.full((2, 3), np.nan), np.array([0, 1]), "NaN or infinite"),
    ],
)
def test_bad_arrays_are_clear_errors(logits, labels, message) -> None:
    with pytest.raises(CalibenchError, match=message):
        get_calibrator("temperature_nll").fit(logits, labels)


def test_transform_needs_the_fitted_number_of_classes() -> None:
    z, y = overconfident(n=200, k=4)
    calibrator = get_calibrator("vector").fit(z, y)
    with pytest.raises(CalibenchError, match="fitted on 4 classes but transform got"):
        calibrator.transform(np.zeros((3, 5)))


def test_a_plugin_calibrator_uses_the_same_contract() -> None:
    @register_calibrator("test_shift")
    class Shift(Calibrator):
        amount: float = 0.0

        def _fit(self, logits, labels):
            self.offset = np.full(logits.shape[1], self.amount)

        def _transform(self, logits):
            return softmax(logits + self.offset, axis=1)

    try:
        z = np.array([[0.0, np.log(3.0)]])
        out = get_calibrator("test_shift", amount=1).fit(z, np.array([1])).transform(z)
        np.testing.assert_allclose(out, [[0.25, 0.75]])
    finally:
        CALIBRATORS.unregister("test_shift")


# --- properties every calibrator shares -------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_output_is_a_deterministic_float64_distribution(name: str) -> None:
    z, y = overconfident()
    test = np.random.default_rng(1).normal(size=(300, 5)) * 3
    first = get_calibrator(name).fit(z, y).transform(test)
    second = get_calibrator(name).fit(z, y).transform(test)
    assert first.dtype == np.float64 and first.shape == (300, 5)
    assert np.all(first >= 0)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", NLL_FITTED)
def test_validation_nll_does_not_increase(name: str) -> None:
    z, y = overconfident()
    before = nll(softmax(z, axis=1), y)
    after = nll(get_calibrator(name).fit(z, y).transform(z), y)
    assert after <= before
    assert after < before - 0.05  # the logits are clearly over-confident


@pytest.mark.parametrize("name", ARGMAX_PRESERVING)
def test_temperature_family_keeps_the_prediction(name: str) -> None:
    z, y = overconfident()
    out = get_calibrator(name).fit(z, y).transform(z)
    np.testing.assert_array_equal(out.argmax(axis=1), z.argmax(axis=1))


def test_renormalise_falls_back_to_uniform_for_zero_rows() -> None:
    out = renormalise(np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(out, [[0.25] * 4, [0.25, 0.75, 0.0, 0.0]])


# --- temperature scaling ----------------------------------------------------------------------


def test_temperature_recovers_the_generating_temperature() -> None:
    z, y = overconfident(n=10000, k=10, temperature=1.5, seed=3)
    by_nll = get_calibrator("temperature_nll").fit(z, y)
    by_ece = get_calibrator("temperature").fit(z, y)
    assert abs(by_nll.temperature - 1.5) < 0.05
    assert abs(by_ece.temperature - 1.5) <= 0.2 + 1e-9
    assert round(by_ece.temperature * 10) == pytest.approx(by_ece.temperature * 10)
    np.testing.assert_allclose(by_nll.transform(z), softmax(z / by_nll.temperature, axis=1))


def test_temperature_nll_matches_netcal() -> None:
    netcal = pytest.importorskip("netcal.scaling")
    z, y = overconfident(n=2000, k=4)
    ours = get_calibrator("temperature_nll").fit(z, y)
    theirs = netcal.TemperatureScaling()
    theirs.fit(softmax(z, axis=1), y)
    # netcal's "temperature" is the multiplier 1/T of the logits
    assert ours.temperature == pytest.approx(1 / float(np.ravel(theirs.temperature)[0]), rel=1e-4)
    np.testing.assert_allclose(ours.transform(z), theirs.transform(softmax(z, axis=1)), atol=1e-5)


def test_grid_temperature_never_changes_accuracy_and_lies_on_the_grid() -> None:
    z, y = overconfident(temperature=3.0)
    t = fit_temperature_grid(z, y)
    assert accuracy(softmax(z / t, axis=1), y) == accuracy(softmax(z, axis=1), y)
    assert t in TEMPERATURE_GRID


@pytest.mark.parametrize("fit", TEMPERATURE_FITS)
def test_temperature_fits_undo_overconfidence(fit: str) -> None:
    z, y = overconfident(temperature=3.0)
    calibrator = temperature_calibrator(fit).fit(z, y)
    assert calibrator.temperature > 1.5 and not calibrator.at_edge and calibrator.warning == ""
    assert ece(calibrator.transform(z), y) < ece(softmax(z, axis=1), y) / 2
    np.testing.assert_array_equal(calibrator.scaled_logits(z), z / calibrator.temperature)


def test_unknown_temperature_fit_is_a_clear_error() -> None:
    with pytest.raises(CalibenchError, match="unknown temperature fit 'ece'"):
        temperature_calibrator("ece")


def test_temperature_on_a_grid_edge_is_flagged() -> None:
    """Labels drawn at T = 0.02 (far sharper than the logits): the ECE-best T lies below the
    grid, so the fit stops at 0.1 and says so; T = 1 on calibrated logits is inside."""
    z, y = overconfident(temperature=0.02)
    low = get_calibrator("temperature").fit(z, y)
    assert low.temperature == 0.1 and low.at_edge
    assert low.warning.startswith("grid edge: T = 0.1 is the lowest value of the reference grid")
    inside = get_calibrator("temperature").fit(*overconfident(temperature=1.0))
    assert not inside.at_edge and inside.warning == ""


def test_temperature_nll_of_a_separable_validation_set_is_flagged() -> None:
    """Every validation prediction right: the NLL falls as T falls and has no minimum; one
    wrong prediction gives it one."""
    z, y = np.eye(4)[np.arange(40) % 4] * 3.0, np.arange(40) % 4
    fitted = get_calibrator("temperature_nll").fit(z, y)
    assert fitted.temperature < 0.5
    assert fitted.warning.startswith("separable: all 40 validation predictions are right")
    y[0] = 1
    assert get_calibrator("temperature_nll").fit(z, y).warning == ""


# --- vector, matrix and Dirichlet scaling ---------------------------------------------------


def test_vector_scaling_recovers_a_known_map() -> None:
    rng = np.random.default_rng(4)
    w, b = np.array([0.5, 1.0, 1.5, 0.8]), np.array([0.3, -0.2, 0.0, 0.1])
    z = rng.normal(size=(30000, 4)) * 2
    y = sample_labels(softmax(z * w + b, axis=1), rng)
    fitted = get_calibrator("vector").fit(z, y)
    np.testing.assert_allclose(fitted.weight, w, atol=0.05)
    np.testing.assert_allclose(fitted.bias - fitted.bias.mean(), b - b.mean(), atol=0.05)


def test_vector_scaling_of_calibrated_logits_is_the_softmax() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(size=(30000, 3)) * 2
    y = sample_labels(softmax(z, axis=1), rng)
    fitted = get_calibrator("vector").fit(z, y)
    np.testing.assert_allclose(fitted.weight, 1.0, atol=0.05)
    test = rng.normal(size=(100, 3))
    np.testing.assert_allclose(fitted.transform(test), softmax(test, axis=1), atol=0.02)


def test_matrix_scaling_recovers_a_known_linear_map() -> None:
    rng = np.random.default_rng(6)
    w = np.array([[1.0, 0.5, 0.0], [-0.4, 1.2, 0.3], [0.2, 0.0, 0.7]])
    b = np.array([0.2, -0.1, 0.0])
    z = rng.normal(size=(40000, 3)) * 2
    y = sample_labels(softmax(z @ w.T + b, axis=1), rng)
    fitted = get_calibrator("matrix_odir", reg_lambda=0.0, reg_mu=0.0).fit(z, y)
    # softmax is invariant to adding the same vector to every row of W (and a constant to b)
    np.testing.assert_allclose(fitted.weight - fitted.weight.mean(0), w - w.mean(0), atol=0.05)
    np.testing.assert_allclose(fitted.bias - fitted.bias.mean(), b - b.mean(), atol=0.05)


def test_dirichlet_is_matrix_scaling_of_log_probabilities() -> None:
    z, y = overconfident(n=800, k=4)
    dirichlet = get_calibrator("dirichlet_odir", reg_lambda=0.5, reg_mu=0.1).fit(z, y)
    matrix = get_calibrator("matrix_odir", reg_lambda=0.5, reg_mu=0.1)
    matrix.fit(log_softmax(z, axis=1), y)
    np.testing.assert_allclose(dirichlet.weight, matrix.weight, atol=1e-5)
    test = np.random.default_rng(2).normal(size=(50, 4)) * 3
    np.testing.assert_allclose(
        dirichlet.transform(test), matrix.transform(log_softmax(test, axis=1)), atol=1e-6
    )


def odir_objective_by_hand(w, b, x, y, lam, mu) -> float:
    """NLL + lam / (K(K-1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2, written out with loops."""
    k = len(b)
    total = 0.0
    for row, label in zip(x, y, strict=True):
        scores = [sum(w[i, j] * row[j] for j in range(k)) + b[i] for i in range(k)]
        total += np.log(sum(np.exp(s) for s in scores)) - scores[label]
    off = sum(w[i, j] ** 2 for i in range(k) for j in range(k) if i != j)
    return total / len(y) + lam / (k * (k - 1)) * off + mu / k * sum(v**2 for v in b)


def odir_problem(rng: np.random.Generator, lam: float, mu: float):
    x, y, k = rng.normal(size=(40, 3)), rng.integers(0, 3, 40), 3
    calibrator = get_calibrator("matrix_odir", reg_lambda=lam, reg_mu=mu)
    free = calibrator.free_entries(k)
    problem = AffineProblem(np.c_[x, np.ones(40)], y, free, calibrator.penalty(k, lam, mu))
    return problem, x, y


def test_odir_objective_gradient_and_hessian() -> None:
    rng = np.random.default_rng(7)
    problem, x, y = odir_problem(rng, 2.0, 0.5)
    theta = rng.normal(size=(3, 4))
    loss, _ = problem.value_and_gradient(theta)
    assert loss == pytest.approx(
        odir_objective_by_hand(theta[:, :3], theta[:, 3], x, y, 2.0, 0.5), rel=1e-12
    )
    flat = theta.ravel()
    error = check_grad(
        lambda t: problem.value_and_gradient(t.reshape(3, 4))[0],
        lambda t: problem.value_and_gradient(t.reshape(3, 4))[1],
        flat,
    )
    assert error < 1e-5
    direction = rng.normal(size=12)
    step = 1e-6
    by_differences = (
        problem.value_and_gradient((flat + step * direction).reshape(3, 4))[1]
        - problem.value_and_gradient((flat - step * direction).reshape(3, 4))[1]
    ) / (2 * step)
    np.testing.assert_allclose(
        problem.hessian_product(theta, direction), by_differences, rtol=1e-5, atol=1e-8
    )


def test_vector_scaling_fits_only_the_diagonal_and_the_intercept() -> None:
    calibrator = get_calibrator("vector")
    free = calibrator.free_entries(3)
    np.testing.assert_array_equal(free, np.c_[np.eye(3, dtype=bool), np.ones(3, dtype=bool)])
    penalty = calibrator.penalty(3, 6.0, 3.0)
    np.testing.assert_allclose(penalty, np.c_[np.zeros((3, 3)), np.ones(3)])


def test_fixed_odir_strengths_scale_with_the_classes() -> None:
    z, y = overconfident(n=300, k=4)
    fixed = get_calibrator("matrix_odir", cv_folds=0).fit(z, y)
    assert (fixed.lambda_, fixed.mu_) == (2.5 * 12, 0.04) and fixed.cv_nll_ == {}
    given = get_calibrator("dirichlet_odir", reg_lambda=7.0, reg_mu=1.0).fit(z, y)
    assert (given.lambda_, given.mu_) == (7.0, 1.0)
    np.testing.assert_allclose(given.penalty(4, 7.0, 1.0)[0], [0, 7 / 12, 7 / 12, 7 / 12, 0.25])


def test_the_strength_grid_is_kull_et_al_s_decades() -> None:
    assert strength_grid(10).tolist() == [10.0**e for e in range(6, -6, -1)]
    assert strength_grid(100)[-1] == 1e-2 and strength_grid(100)[0] == 1e6


def test_cross_validation_picks_a_strength_when_the_map_helps() -> None:
    """Labels from a full linear map of the logits: matrix scaling beats temperature scaling on
    held-out folds, and the chosen strength is the cross-validated best."""
    rng = np.random.default_rng(6)
    w = np.array([[1.0, 0.5, 0.0], [-0.4, 1.2, 0.3], [0.2, 0.0, 0.7]])
    z = rng.normal(size=(3000, 3)) * 2
    y = sample_labels(softmax(z @ w.T, axis=1), rng)
    fitted = get_calibrator("matrix_odir").fit(z, y)
    assert fitted.warning == ""
    best = min(fitted.cv_nll_, key=fitted.cv_nll_.get)
    assert fitted.lambda_ == best * 6 and fitted.mu_ == best * 3
    assert fitted.cv_nll_[best] < fitted.cv_nll_temperature_


def test_cross_validation_falls_back_to_temperature_scaling_and_says_so() -> None:
    """Labels drawn at T = 2, 25 samples per class: the 72 extra weights only overfit."""
    z, y = overconfident(n=200, k=8, temperature=2.0, seed=0)
    fitted = get_calibrator("matrix_odir").fit(z, y)
    assert fitted.warning.startswith("cross-validation: temperature scaling's held-out NLL")
    assert "fell back to temperature scaling by NLL" in fitted.warning
    t = get_calibrator("temperature_nll").fit(z, y).temperature
    np.testing.assert_allclose(fitted.transform(z), softmax(z / t, axis=1), atol=1e-12)


def test_separable_when_the_unpenalised_weights_alone_classify_every_sample() -> None:
    """The label is the argmax of z * (3, 1, 1), with a margin: the diagonal alone separates
    the samples although the plain argmax does not; five flipped labels make it inseparable."""
    rng = np.random.default_rng(11)
    scaled = rng.normal(size=(400, 3)) * np.array([3.0, 1.0, 1.0])
    ordered = np.sort(scaled, axis=1)
    scaled = scaled[ordered[:, -1] - ordered[:, -2] > 0.1]
    z, y = scaled / np.array([3.0, 1.0, 1.0]), scaled.argmax(axis=1)
    assert np.mean(z.argmax(axis=1) == y) < 0.95
    calibrator = get_calibrator("matrix_odir", reg_lambda=1.0, reg_mu=1.0)
    free, penalty = calibrator.free_entries(3), calibrator.penalty(3, 1.0, 1.0)
    assert separable(AffineProblem(np.c_[z, np.ones(len(z))], y, free, penalty))
    flipped = y.copy()
    flipped[:5] = (flipped[:5] + 1) % 3
    assert not separable(AffineProblem(np.c_[z, np.ones(len(z))], flipped, free, penalty))
    fitted = calibrator.fit(z, y)
    assert fitted.warning.startswith(
        f"separable: the unpenalised weights alone classify all {len(y)} validation samples"
    )
    t = get_calibrator("temperature_nll").fit(z, y).temperature
    np.testing.assert_allclose(fitted.weight, np.eye(3) / t)


def test_too_few_samples_per_class_are_flagged() -> None:
    z, y = overconfident(n=60, k=5)
    y[y == 4] = 3
    y[:4] = 4
    for name in ("vector", "matrix_odir", "dirichlet_odir", "isotonic", "histogram_binning"):
        warning = get_calibrator(name).fit(z, y).warning
        assert warning.startswith("too few samples per class: class 4 has 4 validation samples")
    warning = get_calibrator("matrix_odir").fit(z, y).warning
    assert "penalty strengths fixed at the defaults, not cross-validated" in warning
    assert get_calibrator("temperature").fit(z, y).warning == ""


def test_an_unfinished_fit_is_flagged() -> None:
    z, y = overconfident(n=300, k=4)
    fitted = get_calibrator("matrix_odir", reg_lambda=0.0, reg_mu=0.0, max_iter=1).fit(z, y)
    assert fitted.warning.startswith("diverged weights: no convergence in 1 iterations")


def torch_odir_fit(x: np.ndarray, y: np.ndarray, lam: float, mu: float) -> np.ndarray:
    """The ODIR fit by torch autograd and torch's L-BFGS: an independent implementation."""
    k = x.shape[1]
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    w = torch.eye(k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    off_diagonal = 1 - torch.eye(k, dtype=torch.float64)
    optimiser = torch.optim.LBFGS(
        [w, b],
        max_iter=500,
        tolerance_grad=1e-10,
        tolerance_change=1e-13,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(features @ w.T + b, labels)
        loss = loss + lam / (k * (k - 1)) * ((w * off_diagonal) ** 2).sum()
        loss = loss + mu / k * (b**2).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 4x4 problem: threads only add overhead
    try:
        optimiser.step(closure)
    finally:
        torch.set_num_threads(threads)
    return torch.softmax(features @ w.T + b, dim=1).detach().numpy()


@pytest.mark.parametrize("name", ["matrix_odir", "dirichlet_odir"])
def test_odir_fit_matches_torch(name: str) -> None:
    z, y = overconfident(n=400, k=4)
    ours = get_calibrator(name, reg_lambda=1.0, reg_mu=0.5).fit(z, y).transform(z)
    x = z if name == "matrix_odir" else log_softmax(z, axis=1)
    np.testing.assert_allclose(ours, torch_odir_fit(x, y, 1.0, 0.5), atol=2e-4)


def test_strong_odir_leaves_a_diagonal_map() -> None:
    z, y = overconfident(n=600, k=4)
    weight = get_calibrator("matrix_odir", reg_lambda=1e8).fit(z, y).weight
    assert np.abs(weight - np.diag(np.diag(weight))).max() < 1e-4
    np.testing.assert_allclose(np.diag(weight), 0.5, atol=0.1)  # the generating T is 2


# --- ensemble temperature scaling -----------------------------------------------------------


def mse(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((probs - np.eye(probs.shape[1])[labels]) ** 2))


def test_ensemble_ts_is_the_two_stage_minimum_found_by_brute_force() -> None:
    z, y = overconfident(n=800, k=4, temperature=1.7)
    fitted = get_calibrator("ensemble_ts").fit(z, y)
    onehot = np.eye(4)[y]
    grid_t = np.linspace(0.05, 5.0, 2476)
    best_t = grid_t[np.argmin([_temperature_objective(t, z, onehot, "mse")[0] for t in grid_t])]
    assert fitted.temperature == pytest.approx(best_t, abs=2e-3)
    parts = np.stack(
        [softmax(z / fitted.temperature, axis=1), softmax(z, axis=1), np.full_like(z, 0.25)]
    )
    steps = np.linspace(0, 1, 201)
    simplex = np.array([(a, c, 1 - a - c) for a in steps for c in steps if a + c <= 1 + 1e-12])
    flat, target = parts.reshape(3, -1), onehot.ravel()
    gram, cross = flat @ flat.T / target.size, flat @ target / target.size
    # mean squared error of the mixture w: w'Gw - 2c'w + mean(onehot^2)
    errors = np.einsum("wi,ij,wj->w", simplex, gram, simplex) - 2 * simplex @ cross + 0.25
    grid_best = float(errors.min())
    assert mse(fitted.transform(z), y) <= grid_best + 1e-12
    assert fitted.weights.min() >= 0 and fitted.weights.sum() == pytest.approx(1.0)


def test_ensemble_ts_puts_weight_on_uniform_for_uninformative_logits() -> None:
    rng = np.random.default_rng(8)
    z, y = rng.normal(size=(2000, 5)) * 4, rng.integers(0, 5, 2000)
    fitted = get_calibrator("ensemble_ts").fit(z, y)
    assert fitted.weights[2] > 0.9


def test_ensemble_ts_by_nll_is_no_worse_than_its_temperature() -> None:
    z, y = overconfident(n=800, k=4)
    fitted = get_calibrator("ensemble_ts", loss="ce").fit(z, y)
    assert nll(fitted.transform(z), y) <= nll(softmax(z / fitted.temperature, axis=1), y) + 1e-12
    assert abs(fitted.temperature - 2.0) < 0.3


def test_ensemble_ts_temperature_gradients() -> None:
    z, y = overconfident(n=100, k=4)
    onehot = np.eye(4)[y]
    for loss in ("mse", "ce"):
        error = check_grad(
            lambda t, loss=loss: _temperature_objective(t[0], z, onehot, loss)[0],
            lambda t, loss=loss: np.array([_temperature_objective(t[0], z, onehot, loss)[1]]),
            np.array([1.3]),
        )
        assert error < 1e-6


# --- isotonic regression and histogram binning ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "theirs", "kwargs"),
    [
        ("isotonic", "IsotonicRegression", {}),
        ("histogram_binning", "HistogramBinning", {"bins": 15}),
    ],
)
def test_one_vs_rest_matches_netcal(name: str, theirs: str, kwargs: dict) -> None:
    netcal = pytest.importorskip("netcal.binning")
    z, y = overconfident(n=1500, k=5)
    test = np.random.default_rng(9).normal(size=(400, 5)) * 3
    ours = get_calibrator(name).fit(z, y).transform(test)
    reference = getattr(netcal, theirs)(**kwargs)
    reference.fit(softmax(z, axis=1), y)
    expected = reference.transform(softmax(test, axis=1))
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_histogram_binning_by_hand() -> None:
    # class 1's probability of sample i is p_i; 2 bins: (0, 0.5], (0.5, 1]
    p1 = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    z = np.log(np.column_stack([1 - p1, p1]))
    y = np.array([0, 0, 1, 1, 1])
    fitted = get_calibrator("histogram_binning", n_bins=2).fit(z, y)
    # class 1: bin 1 holds 1 of 3 positives, bin 2 holds 2 of 2; class 0 mirrors it
    np.testing.assert_allclose(fitted.bin_values, [[0.0, 2 / 3], [1 / 3, 1.0]])
    out = fitted.transform(np.log(np.array([[0.6, 0.4], [0.3, 0.7]])))
    np.testing.assert_allclose(out, [[(2 / 3) / 1.0, (1 / 3) / 1.0], [0.0, 1.0]])


def test_empty_histogram_bins_keep_their_midpoint() -> None:
    p1 = np.array([0.1, 0.2, 0.3, 0.4])  # bin (0.5, 1] of class 1 is empty
    z = np.log(np.column_stack([1 - p1, p1]))
    fitted = get_calibrator("histogram_binning", n_bins=2).fit(z, np.array([0, 0, 1, 0]))
    assert fitted.bin_values[1, 1] == 0.75
    assert fitted.bin_values[0, 0] == 0.25  # class 0's probabilities are all above 0.5


@pytest.mark.parametrize(
    ("name", "hyperparameters"), [("isotonic", {}), ("histogram_binning", {"n_bins": 2})]
)
def test_rows_mapped_to_zero_become_uniform(name: str, hyperparameters: dict) -> None:
    # each class is the label exactly when its probability is 0.6, and a negative at 0.02 to 0.38,
    # so a test row with all three probabilities near 1/3 maps to (0, 0, 0) before renormalising
    labels = np.arange(300) % 3
    probs = np.empty((300, 3))
    for i, (y, low) in enumerate(zip(labels, np.tile([0.02, 0.1], 150), strict=True)):
        probs[i, [y, (y + 1) % 3, (y + 2) % 3]] = [0.6, 0.4 - low, low]
    fitted = get_calibrator(name, **hyperparameters).fit(np.log(probs), labels)
    out = fitted.transform(np.log(np.array([[0.34, 0.33, 0.33], [0.1, 0.1, 0.8]])))
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out[0], 1 / 3)
    np.testing.assert_allclose(out[1], [0.0, 0.0, 1.0])


# --- log-probabilities, NLL without a silent floor, warnings on stored runs -----------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_log_transform_is_the_log_of_transform(name: str) -> None:
    z, y = overconfident()
    calibrator = get_calibrator(name).fit(z, y)
    test = np.random.default_rng(3).normal(size=(200, 5)) * 3
    with np.errstate(divide="ignore"):
        expected = np.log(calibrator.transform(test))
    np.testing.assert_allclose(calibrator.log_transform(test), expected, atol=1e-9)


def test_the_nll_comes_from_log_probabilities_not_a_floor() -> None:
    """softmax of (800, 0) gives the true class exactly 0 in float64; log_softmax gives -800."""
    z, y = np.array([[0.0, 800.0], [3.0, 0.0]]), np.array([0, 0])
    plain = Uncalibrated().fit(z, y)
    metrics, warning = calibrated_metrics(plain, z, y)
    assert metrics["nll"] == pytest.approx((800.0 + np.log1p(np.exp(-3.0))) / 2)
    assert warning == ""
    floored = metrics_of_probabilities(plain.transform(z), y)["nll"]
    assert floored == pytest.approx((-np.log(PROBABILITY_FLOOR) + np.log1p(np.exp(-3.0))) / 2)


def test_zero_probabilities_are_floored_counted_and_said() -> None:
    with np.errstate(divide="ignore"):
        log_p = np.log(np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]))
    metrics, warning = metrics_of_log_probabilities(log_p, np.array([0, 1, 1]))
    assert warning == (
        "probabilities floored: 1 of 3 samples give their true class probability 0; their NLL "
        "term uses 1e-12 instead"
    )
    assert metrics["nll"] == pytest.approx((np.log(2) - np.log(PROBABILITY_FLOOR)) / 3)


def test_calibrator_rows_carry_the_fit_warning() -> None:
    z, y = overconfident(n=60, k=5)
    y[:4], y[y == 4] = 4, 3
    fitted = fit_calibrators(("isotonic", "temperature"), z, y)
    rows = {r["calibrator"]: r for r in calibrator_rows(fitted, z, y)}
    assert set(rows) == {"none", "isotonic", "temperature"}
    assert rows["isotonic"]["warning"].startswith("too few samples per class: class 4 has")
    assert rows["none"]["warning"] == rows["temperature"]["warning"] == ""


DIGITS = Path(__file__).resolve().parents[1] / "results" / "digits-3seeds"


@pytest.mark.parametrize("name", ["vector", "matrix_odir", "dirichlet_odir"])
def test_no_digits_calibrator_doubles_the_nll_without_saying_why(name: str) -> None:
    """The 39 stored digits-3seeds runs (216 validation images each): a fitted map whose test
    NLL is more than twice the run's uncalibrated NLL must carry a warning."""
    paths = sorted(DIGITS.glob("runs/digits/small_cnn/*/*/logits.npz"))
    assert len(paths) == 39
    for path in paths:
        with np.load(path) as stored:
            val, val_y = stored["val_logits"], stored["val_labels"]
            test, test_y = stored["test_logits"], stored["test_labels"]
        none, row = calibrator_rows(fit_calibrators((name,), val, val_y), test, test_y)
        assert row["nll"] <= 2 * none["nll"] or row["warning"], path.parent.name
