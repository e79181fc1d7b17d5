"""Bootstrap intervals, paired comparisons and best/tied marks: resampled metrics against
calibench.evaluation.metrics on the resampled rows, coverage on synthetic data with a known
truth, and hand-computed t-intervals and scipy's Wilcoxon test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from calibench.errors import CalibenchError
from calibench.evaluation import bootstrap as B
from calibench.evaluation import compare as C
from calibench.evaluation import metrics as M

REFERENCE = {
    "acc": lambda z, y: M.accuracy(M.softmax(z), y),
    "nll": M.nll,
    "brier": lambda z, y: M.brier(M.softmax(z), y),
    "ece": lambda z, y: M.ece(M.softmax(z), y),
    "adaece": lambda z, y: M.adaece(M.softmax(z), y),
    "cece": lambda z, y: M.cece(M.softmax(z), y),
    "mce": lambda z, y: M.mce(M.softmax(z), y),
}


def logits_from(conf: np.ndarray, correct: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Logits whose top-label confidence is ``conf`` and whose prediction is right where
    ``correct``; the other classes share the remaining mass."""
    n = len(conf)
    wrong = (labels + 1 + np.arange(n) % (k - 1)) % k
    probs = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    probs[np.arange(n), np.where(correct, labels, wrong)] = conf
    return np.log(probs)


def miscalibrated_pair(rng: np.random.Generator, n: int, k: int = 10):
    """Two models with the same confidences c ~ U(0.5, 1) on one test set; A is right with
    probability c - 0.3 and B with c - 0.15 (shared uniforms, so paired). In every bin the gap
    is exactly 0.3 for A and 0.15 for B: population ECE_A = 0.3, ECE_B = 0.15."""
    conf = rng.uniform(0.5, 1.0, n)
    u = rng.uniform(size=n)
    labels = rng.integers(0, k, n)
    return (
        logits_from(conf, u < conf - 0.3, labels, k),
        logits_from(conf, u < conf - 0.15, labels, k),
        labels,
    )


def random_logits(rng: np.random.Generator, n: int, k: int, rounded: bool = False):
    logits = rng.normal(size=(n, k)) * 2
    if rounded:
        logits = np.round(logits)
    return logits, rng.integers(0, k, n)


@pytest.mark.parametrize("name", B.RESAMPLED_METRICS)
@pytest.mark.parametrize(("n", "k", "rounded"), [(300, 5, False), (300, 4, True), (10, 3, False)])
def test_resampled_metric_equals_metric_of_resampled_rows(name, n, k, rounded):
    """Rounded logits give tied confidences (edges on samples); n = 10 < 15 bins puts equal-mass
    edges past the last sample."""
    rng = np.random.default_rng(n + k)
    logits, labels = random_logits(rng, n, k, rounded)
    indices = rng.integers(0, n, (25, n))
    fast = B.resample_metric(name, logits, labels)(indices)
    slow = [REFERENCE[name](logits[i], labels[i]) for i in indices]
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_adaptive_edges_round_like_numpy_interp():
    """n = 8, 15 bins: the first interior edge interpolates 0.53 of the way from 0.6 to the next
    float, which rounds up onto that sample and so moves it into the lower bin."""
    conf = np.array([0.6, np.nextafter(0.6, 1), 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    hit = np.array([0.0, 1, 1, 0, 1, 1, 0, 1])
    edges = M.equal_mass_edges(conf, 15)
    assert edges[1] == conf[1]
    expected = M.calibration_bins(conf, hit, edges).expected_error()
    assert B._adaptive_ece(conf, hit, 15)(np.ones((1, 8)))[0] == pytest.approx(expected, abs=1e-15)


def test_ts_suffix_uses_the_same_metric_on_the_given_logits():
    logits, labels = random_logits(np.random.default_rng(0), 200, 5)
    indices = np.random.default_rng(1).integers(0, 200, (5, 200))
    np.testing.assert_array_equal(
        B.resample_metric("ece_ts", logits / 2, labels)(indices),
        B.resample_metric("ece", logits / 2, labels)(indices),
    )


def test_bootstrap_is_deterministic_for_a_seed():
    logits, labels = random_logits(np.random.default_rng(0), 500, 10)
    first = B.bootstrap_interval("ece", logits, labels, n_resamples=200, seed=3)
    assert B.bootstrap_interval("ece", logits, labels, n_resamples=200, seed=3) == first
    assert B.bootstrap_interval("ece", logits, labels, n_resamples=200, seed=4) != first


def test_named_metric_and_function_draw_the_same_resamples():
    logits, labels = random_logits(np.random.default_rng(2), 300, 10)
    named = B.bootstrap_interval("adaece", logits, labels, n_resamples=150, seed=7)
    function = B.bootstrap_interval(REFERENCE["adaece"], logits, labels, n_resamples=150, seed=7)
    assert function == pytest.approx(named, rel=1e-10)


def test_interval_is_the_percentile_interval_of_resampled_values():
    """Same draws as scipy's resampler: generator(seed).integers(0, n, (batch, n)) per batch."""
    logits, labels = random_logits(np.random.default_rng(5), 200, 4)
    rng = np.random.default_rng(11)
    indices = np.concatenate([rng.integers(0, 200, (100, 200)) for _ in range(3)])
    values = [REFERENCE["nll"](logits[i], labels[i]) for i in indices]
    expected = np.percentile(values, [2.5, 97.5])
    got = B.bootstrap_interval("nll", logits, labels, n_resamples=300, seed=11)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_bootstrap_interval_covers_the_true_ece_at_the_stated_rate():
    draws, hits = 200, 0
    for draw in range(draws):
        a, _, labels = miscalibrated_pair(np.random.default_rng(draw), 1000)
        low, high = B.bootstrap_interval("ece", a, labels, n_resamples=200, seed=draw)
        hits += low <= 0.3 <= high
    assert 0.90 <= hits / draws <= 0.99


def test_paired_bootstrap_covers_the_true_ece_difference_at_the_stated_rate():
    draws, hits = 200, 0
    for draw in range(draws):
        a, b, labels = miscalibrated_pair(np.random.default_rng(1000 + draw), 1000)
        low, high = B.paired_bootstrap_interval("ece", [a], [b], labels, 200, seed=draw)
        hits += low <= 0.15 <= high
    assert 0.90 <= hits / draws <= 0.99


def test_paired_bootstrap_resamples_a_and_b_together():
    """One seed: the interval of ECE(A) - ECE(B) where both see the same rows, written as one
    function of the side-by-side logits."""
    rng = np.random.default_rng(4)
    a, b, labels = miscalibrated_pair(rng, 400, k=5)

    def difference(z: np.ndarray, y: np.ndarray) -> float:
        return REFERENCE["ece"](z[:, :5], y) - REFERENCE["ece"](z[:, 5:], y)

    joint = B.bootstrap_interval(difference, np.hstack([a, b]), labels, n_resamples=120, seed=9)
    paired = B.paired_bootstrap_interval("ece", [a], [b], labels, n_resamples=120, seed=9)
    assert paired == pytest.approx(joint, rel=1e-10)


def test_seeds_with_their_own_test_sets_are_resampled_independently():
    rng = np.random.default_rng(8)
    (a1, b1, y1), (a2, b2, y2) = miscalibrated_pair(rng, 300), miscalibrated_pair(rng, 200)
    low, high = B.paired_bootstrap_interval("ece", [a1, a2], [b1, b2], [y1, y2], 200, seed=1)
    mean = np.mean([REFERENCE["ece"](a1, y1) - REFERENCE["ece"](b1, y1),
                    REFERENCE["ece"](a2, y2) - REFERENCE["ece"](b2, y2)])  # fmt: skip
    assert low < mean < high
    assert B.paired_bootstrap_interval("ece", [a1, a2], [b1, b2], [y1, y2], 200, 0.95, 1) == (
        low,
        high,
    )


def test_seed_interval_matches_hand_computation_and_scipy():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.sqrt(5 / 3) / 2  # t_{0.975, 3} · sd / sqrt(4)
    assert C.seed_interval(d) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
    scipy_ci = scipy_stats.ttest_1samp(d, 0.0).confidence_interval(0.9)
    assert C.seed_interval(d, level=0.9) == pytest.approx((scipy_ci.low, scipy_ci.high))
    assert C.seed_interval([0.3]) is None


def test_seed_interval_covers_the_true_mean_difference_at_the_stated_rate():
    rng = np.random.default_rng(0)
    draws = 400
    hits = sum(
        low <= 0.02 <= high
        for low, high in (C.seed_interval(rng.normal(0.02, 0.01, 5)) for _ in range(draws))
    )
    assert 0.92 <= hits / draws <= 0.98


def test_wilcoxon_needs_six_seeds_to_reach_significance():
    assert scipy_stats.wilcoxon(np.arange(1.0, 6.0)).pvalue == pytest.approx(2 / 2**5)
    assert scipy_stats.wilcoxon(np.arange(1.0, 7.0)).pvalue == pytest.approx(2 / 2**6)
    assert C.wilcoxon_p_value(np.arange(5.0), np.zeros(5)) is None
    assert 2 / 2 ** (B.WILCOXON_MIN_SEEDS - 1) > 0.05 > 2 / 2**B.WILCOXON_MIN_SEEDS


def test_wilcoxon_p_value_equals_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=8), rng.normal(size=8)
    assert C.wilcoxon_p_value(a, b) == scipy_stats.wilcoxon(a, b).pvalue
    assert C.wilcoxon_p_value(a, a) == 1.0


def test_verdict_needs_every_available_interval_to_exclude_zero():
    assert C.verdict([(-2.0, -1.0), (-3.0, -0.5)], lower_is_better=True) == "A better"
    assert C.verdict([(-2.0, -1.0), (-3.0, 0.5)], lower_is_better=True) == "tied"
    assert C.verdict([None, (1.0, 2.0)], lower_is_better=True) == "B better"
    assert C.verdict([None, (1.0, 2.0)], lower_is_better=False) == "A better"
    assert C.verdict([None, None], lower_is_better=True) == "tied"
    assert C.verdict([(0.0, 0.0)], lower_is_better=True) == "tied"


def seeded_pairs(n_seeds: int, gap_b: float):
    """Per seed: A with gap 0.3, B with ``gap_b``, on the same test set of 600 samples."""
    labels = np.random.default_rng(99).integers(0, 10, 600)
    a_logits, b_logits = [], []
    for s in range(n_seeds):
        rng = np.random.default_rng(s)
        conf, u = rng.uniform(0.5, 1.0, 600), rng.uniform(size=600)
        a_logits.append(logits_from(conf, u < conf - 0.3, labels, 10))
        b_logits.append(logits_from(conf, u < conf - gap_b, labels, 10))
    a = [REFERENCE["ece"](z, labels) for z in a_logits]
    b = [REFERENCE["ece"](z, labels) for z in b_logits]
    return a, b, a_logits, b_logits, labels


def test_identical_methods_are_tied():
    a, _, a_logits, _, labels = seeded_pairs(6, 0.3)
    result = C.paired_comparison(
        "ece", a, a, a_logits=a_logits, b_logits=a_logits, labels=labels, n_resamples=100
    )
    assert result.verdict == "tied"
    assert result.mean_diff == 0.0
    assert result.bootstrap_interval == (0.0, 0.0)
    assert result.p_value == 1.0


def test_a_large_clear_difference_picks_the_right_method():
    a, b, a_logits, b_logits, labels = seeded_pairs(6, 0.05)
    result = C.paired_comparison(
        "ece",
        a,
        b,
        a_logits=a_logits,
        b_logits=b_logits,
        labels=labels,
        names=("focal", "rankmixup"),
        n_resamples=200,
    )
    assert result.verdict == "B better" and result.winner == "rankmixup"
    assert result.seed_interval[0] > 0 and result.bootstrap_interval[0] > 0
    assert result.p_value == scipy_stats.wilcoxon(a, b).pvalue
    assert result.swapped().verdict == "A better" and result.swapped().winner == "rankmixup"
    line = result.describe()
    assert "\n" not in line and "focal - rankmixup" in line and line.endswith("rankmixup better")


def test_higher_is_better_flips_the_verdict():
    a, b = [0.95, 0.96, 0.955], [0.90, 0.91, 0.905]
    assert C.paired_comparison("acc", a, b).verdict == "A better"
    assert C.paired_comparison("acc", a, b, lower_is_better=True).verdict == "B better"
    assert C.paired_comparison("ece", a, b).verdict == "B better"


def test_fewer_than_two_seeds_without_logits_is_tied():
    result = C.paired_comparison("ece", [0.01], [0.2])
    assert result.seed_interval is None and result.p_value is None
    assert result.verdict == "tied"


def test_values_that_do_not_match_the_logits_are_an_error():
    a, b, a_logits, b_logits, labels = seeded_pairs(2, 0.05)
    with pytest.raises(CalibenchError, match="logits give"):
        C.paired_comparison(
            "ece", a, [v + 0.01 for v in b], a_logits=a_logits, b_logits=b_logits, labels=labels
        )


def test_bad_input_is_a_clear_error():
    with pytest.raises(CalibenchError, match="per seed"):
        C.paired_comparison("ece", [0.1, 0.2], [0.1])
    with pytest.raises(CalibenchError, match="lower_is_better"):
        C.paired_comparison("temperature", [1.0, 2.0], [1.5, 2.5])
    with pytest.raises(CalibenchError, match="no bootstrap"):
        B.bootstrap_interval("smece", np.zeros((3, 2)), np.zeros(3, dtype=int))


def runs_table() -> pd.DataFrame:
    """ECE over five seeds: A is clearly lowest, B and C are close; D misses seeds 0 and 1."""
    offsets = np.array([0.001, -0.002, 0.0, 0.002, -0.001])
    rows = [("A", s, 0.01 + o) for s, o in enumerate(offsets)]
    rows += [("B", s, 0.05 + o) for s, o in enumerate(offsets)]
    rows += [("C", s, 0.051 - o) for s, o in enumerate(offsets)]
    rows += [("D", s, 0.2) for s in range(2, 5)]
    return pd.DataFrame(rows, columns=["method", "seed", "ece"])


def summary_of(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.groupby("method", as_index=False)["ece"].mean()


def test_compare_methods_pairs_on_common_seeds():
    runs = runs_table()
    comparisons = C.compare_methods(runs, "ece")
    assert len(comparisons) == 4 * 3
    assert comparisons[("A", "D")].n_seeds == 3
    assert comparisons[("A", "D")].mean_diff == pytest.approx(np.mean([0.01, 0.012, 0.009]) - 0.2)
    assert comparisons[("B", "C")].verdict == "tied"
    assert comparisons[("C", "A")].verdict == "B better"


def test_mark_best_marks_a_clear_winner():
    runs = runs_table()
    marks = C.mark_best(summary_of(runs), "ece", True, C.compare_methods(runs, "ece"))
    assert marks.tolist() == ["best", "", "", ""]


def test_mark_best_marks_the_set_tied_for_best():
    runs = runs_table()
    runs = runs[runs.method != "A"]
    summary = summary_of(runs)
    marks = C.mark_best(summary, "ece", True, C.compare_methods(runs, "ece"))
    assert dict(zip(summary.method, marks, strict=True)) == {"B": "tied", "C": "tied", "D": ""}


def test_mark_best_counts_a_missing_comparison_as_tied():
    runs = runs_table()
    summary = summary_of(runs)
    comparisons = {k: v for k, v in C.compare_methods(runs, "ece").items() if "D" not in k}
    marks = C.mark_best(summary, "ece", True, comparisons)
    assert marks.tolist() == ["tied", "", "", "tied"]
    assert C.mark_best(summary.iloc[:1], "ece", True, {}).tolist() == [""]
