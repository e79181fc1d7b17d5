"""THE verdict rule (calibench.evaluation.blocks and .compare): the block-design t-tests against
scipy and a second route through the ANOVA sums of squares, Holm's step-down against hand
values, the marks, the family-wise error and power by simulation, and the stored digits-3seeds
runs (docs/statistics.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from calibench.cli.commands import main
from calibench.errors import CalibenchError
from calibench.evaluation import blocks as K
from calibench.evaluation import compare as C
from calibench.evaluation import metrics as M

DIGITS = Path(__file__).resolve().parents[1] / "results" / "digits-3seeds"


# --- the array rule -------------------------------------------------------------------------


def test_k2_is_the_paired_t_test_over_seeds():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.05, 0.01, 4), rng.normal(0.06, 0.01, 4)
    difference, t, p, df = K.pairwise_t(np.stack([a, b]))
    paired = scipy_stats.ttest_rel(a, b)
    assert df == 3 and difference[0] == pytest.approx(np.mean(a - b))
    assert t[0] == pytest.approx(paired.statistic) and p[0] == pytest.approx(paired.pvalue)


def test_pooled_variance_equals_the_anova_sums_of_squares():
    """Residual mean square by the sums of squares: SS_total - SS_methods - SS_seeds."""
    values = np.random.default_rng(1).normal(size=(5, 4)) + np.arange(5)[:, None]
    grand = values.mean()
    ss_total = np.sum((values - grand) ** 2)
    ss_methods = 4 * np.sum((values.mean(axis=1) - grand) ** 2)
    ss_seeds = 5 * np.sum((values.mean(axis=0) - grand) ** 2)
    means, mse, df = K.block_anova(values)
    assert df == 12 and mse == pytest.approx((ss_total - ss_methods - ss_seeds) / 12)
    difference, t, p, _ = K.pairwise_t(values)
    assert t[0] == pytest.approx((means[0] - means[1]) / np.sqrt(2 * mse / 4))
    assert p[0] == pytest.approx(2 * scipy_stats.t.sf(abs(t[0]), 12))


def test_a_seed_effect_shared_by_every_method_cancels():
    values = np.random.default_rng(2).normal(size=(4, 3))
    shifted = values + np.array([5.0, -3.0, 11.0])
    np.testing.assert_allclose(K.pairwise_t(shifted)[2], K.pairwise_t(values)[2], rtol=1e-9)


def test_zero_residual_variance():
    """Every seed moves every method alike: any difference is certain, no difference is not."""
    _, _, p, _ = K.pairwise_t(np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]]))
    assert p.tolist() == [0.0, 1.0, 0.0]


def test_holm_adjusted_p_values_by_hand():
    """Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, then the
    running maximum: 0.02, 0.03, 0.06, 0.06."""
    adjusted = K.holm_adjust(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert K.holm_adjust(np.array([0.6, 0.5]))[0] == 1.0
    batch = K.holm_adjust(np.array([[0.01, 0.04, 0.03, 0.005], [0.5, 0.01, 0.2, 0.3]]))
    np.testing.assert_allclose(batch[1], [0.6, 0.04, 0.6, 0.6])


def test_mark_codes_by_hand():
    """Pairs of 3 methods in triu order: (0,1), (0,2), (1,2)."""
    means = np.array([0.1, 0.2, 0.3])
    assert K.mark_codes(means, np.array([True, True, False]), True).tolist() == [2, 0, 0]
    assert K.mark_codes(means, np.array([False, True, True]), True).tolist() == [1, 1, 0]
    assert K.mark_codes(means, np.array([False, True, False]), False).tolist() == [0, 1, 1]
    assert K.mark_codes(means, np.array([True, False, False]), False).tolist() == [1, 1, 1]
    assert K.mark_codes(means, np.zeros(3, dtype=bool), True).tolist() == [1, 1, 1]


def rule(values: np.ndarray) -> np.ndarray:
    _, _, p, _ = K.pairwise_t(values)
    return K.mark_codes(values.mean(axis=-1), K.holm_adjust(p) <= C.ALPHA, True)


@pytest.mark.parametrize(("n", "k"), [(2, 2), (3, 5), (3, 13), (5, 13)])
def test_identical_methods_get_a_mark_other_than_tied_at_most_five_percent_of_the_time(n, k):
    codes = rule(np.random.default_rng(n * k).standard_normal((3000, k, n)))
    rate = np.mean((codes != 1).any(axis=-1))
    assert rate <= C.ALPHA + 3 * np.sqrt(C.ALPHA * (1 - C.ALPHA) / 3000)


def test_five_seed_sds_in_a_13_method_table_over_3_seeds_is_marked():
    """One method 5 seed SDs better than 12 equal others: marked best in >= 80% of tables; one
    method 5 SDs worse: left unmarked in >= 80%."""
    noise = np.random.default_rng(5).standard_normal((3000, 13, 3))
    effect = np.zeros((13, 1))
    effect[0] = -5.0
    assert np.mean(rule(noise + effect)[:, 0] == 2) >= 0.8
    assert np.mean(rule(noise - effect)[:, 0] == 0) >= 0.8


# --- compare_table --------------------------------------------------------------------------


def runs_table() -> pd.DataFrame:
    """ECE over five seeds: A is clearly lowest, B and C are close; D misses seeds 0 and 1."""
    offsets = np.array([0.001, -0.002, 0.0, 0.002, -0.001])
    rows = [("A", s, 0.01 + o) for s, o in enumerate(offsets)]
    rows += [("B", s, 0.05 + o) for s, o in enumerate(offsets)]
    rows += [("C", s, 0.051 - o) for s, o in enumerate(offsets)]
    rows += [("D", s, 0.2 + o) for s, o in enumerate(offsets) if s >= 2]
    return pd.DataFrame(rows, columns=["method", "seed", "ece"])


def test_a_clear_winner_is_best_on_the_common_seeds():
    verdict = C.compare_table(runs_table(), "ece")
    assert verdict.marks == {"A": "best", "B": "", "C": "", "D": ""}
    assert verdict.best == "A" and verdict.seeds == (2, 3, 4) and verdict.df == 6
    assert verdict.note.startswith("4 methods over seeds 2, 3, 4;")
    assert verdict.note.endswith("A best")
    assert len(verdict.pairs) == 6 and verdict.pair("B", "A").difference > 0
    assert verdict.means["A"] == pytest.approx(np.mean([0.01, 0.012, 0.009]))


def test_the_set_tied_for_best():
    runs = runs_table()
    verdict = C.compare_table(runs[runs.method != "A"], "ece")
    assert verdict.marks == {"B": "tied", "C": "tied", "D": ""}
    assert not verdict.pair("B", "C").significant and verdict.pair("B", "D").significant
    assert verdict.note.endswith("tied for best: B, C")


def test_higher_is_better_marks_the_highest_mean():
    runs = runs_table().assign(acc=lambda f: 1 - f["ece"])
    assert C.compare_table(runs, "acc").best == "A"
    assert C.compare_table(runs, "acc", lower_is_better=False).best == "A"
    assert C.compare_table(runs, "acc", lower_is_better=True).marks["D"] == "best"


def test_one_seed_gives_no_verdict_and_no_mark():
    runs = runs_table()
    verdict = C.compare_table(runs[runs.seed == 2], "ece")
    assert set(verdict.marks.values()) == {""} and verdict.pairs == ()
    assert verdict.note == "one seed: training noise is not measured; no verdict"


def test_methods_without_a_common_seed_or_a_value():
    runs = runs_table()
    apart = runs[(runs.method != "D") | (runs.seed == 4)]
    apart = apart[(apart.method == "D") | (apart.seed < 2)]
    assert C.compare_table(apart, "ece").note.startswith("no seed common to all 4 methods")
    empty = runs.assign(ece=np.where(runs.method == "D", np.nan, runs.ece))
    verdict = C.compare_table(empty, "ece")
    assert verdict.marks["D"] == "" and verdict.seeds == (0, 1, 2, 3, 4)
    assert verdict.marks["A"] == "best"


def test_bad_tables_are_clear_errors():
    runs = runs_table()
    with pytest.raises(CalibenchError, match="same seed"):
        C.compare_table(pd.concat([runs, runs.iloc[:1]]), "ece")
    with pytest.raises(CalibenchError, match="lacks column"):
        C.compare_table(runs, "nll")
    with pytest.raises(CalibenchError, match="lower_is_better"):
        C.compare_table(runs.rename(columns={"ece": "temperature"}), "temperature")


# --- compare A B ----------------------------------------------------------------------------


def test_seed_interval_matches_hand_computation_and_scipy():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.sqrt(5 / 3) / 2  # t_{0.975, 3} · sd / sqrt(4)
    assert C.seed_interval(d) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
    scipy_ci = scipy_stats.ttest_1samp(d, 0.0).confidence_interval(0.9)
    assert C.seed_interval(d, level=0.9) == pytest.approx((scipy_ci.low, scipy_ci.high))
    assert C.seed_interval([0.3]) is None


def test_pair_verdict_is_the_paired_t_test():
    a, b = [0.95, 0.97, 0.955], [0.90, 0.91, 0.905]
    result = C.paired_comparison("acc", a, b, names=("ls", "ce"))
    assert result.verdict == "A better" and result.winner == "ls"
    assert result.p_value == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert C.paired_comparison("ece", a, b).verdict == "B better"
    line = C.paired_comparison("ece", a, b, names=("ls", "ce")).describe()
    assert "\n" not in line and "ls - ce = 0.05333 over seeds 0, 1, 2" in line
    assert "ce better; information only: 95% bootstrap over test samples n/a" in line


def test_one_seed_is_not_a_verdict():
    result = C.paired_comparison("ece", [0.01], [0.2], names=("crl", "focal"))
    assert result.verdict == "n/a" and result.winner is None and result.p_value is None
    assert "n/a (one seed: training noise is not measured)" in result.describe()


def logits_from(conf: np.ndarray, correct: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    n = len(conf)
    wrong = (labels + 1 + np.arange(n) % (k - 1)) % k
    probs = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    probs[np.arange(n), np.where(correct, labels, wrong)] = conf
    return np.log(probs)


def seeded_pairs(n_seeds: int, gap_a: float, gap_b: float, spread: float = 0.0):
    """Per seed s: A right with probability conf - gap_a - spread * s, B with conf - gap_b, on
    one test set of 600 samples."""
    labels = np.random.default_rng(99).integers(0, 10, 600)
    a_logits, b_logits = [], []
    for s in range(n_seeds):
        rng = np.random.default_rng(s)
        conf, u = rng.uniform(0.5, 1.0, 600), rng.uniform(size=600)
        a_logits.append(logits_from(conf, u < conf - gap_a - spread * s, labels, 10))
        b_logits.append(logits_from(conf, u < conf - gap_b, labels, 10))
    ece = [[M.ece(M.softmax(z), labels) for z in zs] for zs in (a_logits, b_logits)]
    return *ece, {"a_logits": a_logits, "b_logits": b_logits, "labels": labels}


def test_the_bootstrap_over_test_samples_is_information_not_the_verdict():
    """A's gap swings from 0.02 to 0.26 over three seeds, B's is 0.2: the test-sample bootstrap
    of the mean difference excludes 0, the seeds do not, and the verdict is tied."""
    a, b, logits = seeded_pairs(3, 0.02, 0.2, spread=0.12)
    result = C.paired_comparison("ece", a, b, logits={**logits, "n_resamples": 200})
    low, high = result.bootstrap_interval
    assert not low <= 0 <= high
    assert result.seed_interval[0] < 0 < result.seed_interval[1]
    assert result.verdict == "tied"


def test_identical_methods_are_tied():
    a, _, logits = seeded_pairs(4, 0.3, 0.3)
    same = {**logits, "b_logits": logits["a_logits"], "n_resamples": 100}
    result = C.paired_comparison("ece", a, a, names=("x", "y"), logits=same)
    assert result.verdict == "tied" and result.mean_diff == 0.0 and result.p_value == 1.0
    assert result.bootstrap_interval == (0.0, 0.0)


def test_pair_inputs_are_checked():
    a, b, logits = seeded_pairs(2, 0.3, 0.05)
    with pytest.raises(CalibenchError, match="logits give"):
        C.paired_comparison("ece", a, [v + 0.01 for v in b], logits=logits)
    with pytest.raises(CalibenchError, match="needs a_logits, b_logits and labels"):
        C.paired_comparison("ece", a, b, logits={"a_logits": logits["a_logits"]})
    with pytest.raises(CalibenchError, match="per seed"):
        C.paired_comparison("ece", [0.1, 0.2], [0.1])
    with pytest.raises(CalibenchError, match="compare two methods"):
        C.paired_comparison("ece", [0.1, 0.2], [0.1, 0.3], names=("ce", "ce"))


# --- the stored digits-3seeds runs ----------------------------------------------------------


def digits_runs() -> pd.DataFrame:
    """One row per stored digits-3seeds run: method, seed and the metrics recorded with it."""
    rows = []
    for path in sorted(DIGITS.glob("runs/digits/small_cnn/*/*/metrics.json")):
        config = json.loads((path.parent / "config.json").read_text())
        metrics = json.loads(path.read_text())
        rows.append({"method": config["method"], "seed": config["seed"], **metrics})
    return pd.DataFrame(rows)


def test_digits_marks_focal_ece_neither_best_nor_tied():
    runs = digits_runs()
    assert len(runs) == 39 and runs.groupby("method").size().eq(3).all()
    verdict = C.compare_table(runs, "ece")
    assert verdict.marks["focal"] == "" and verdict.marks["flsd53"] == ""
    assert verdict.seeds == (0, 1, 2) and "tied" in verdict.marks.values()
    assert verdict.pair("ce", "focal").significant


def copy_runs(tmp_path: Path, methods: tuple[str, ...], seeds: tuple[int, ...]) -> Path:
    out = tmp_path / "store"
    for method in methods:
        for seed in seeds:
            (run,) = DIGITS.glob(f"runs/digits/small_cnn/{method}/seed{seed}-*")
            target = out / run.relative_to(DIGITS)
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("*.pt", "shift-*"))
    return out


def test_compare_ce_focal_on_three_digits_seeds(tmp_path, capsys):
    out = copy_runs(tmp_path, ("ce", "focal"), (0, 1, 2))
    assert main(["status", "--rebuild", "--output", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "ce", "focal", "--metric", "ece", "--json", "--output", str(out)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["winner"] == "ce" and result["verdict"] == "A better"
    assert result["seeds"] == [0, 1, 2] and result["seed_interval"][1] < 0


def test_compare_with_one_seed_says_n_a(tmp_path, capsys):
    out = copy_runs(tmp_path, ("ce", "focal"), (0,))
    assert main(["status", "--rebuild", "--output", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "ce", "focal", "--output", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "n/a (one seed: training noise is not measured)" in text
    assert "ce better" not in text and "focal better" not in text


@pytest.mark.parametrize("column", ["seed", "epochs", "run_id"])
def test_compare_on_a_column_that_is_not_a_metric_is_one_message(tmp_path, capsys, column):
    out = copy_runs(tmp_path, ("ce", "focal"), (0,))
    assert main(["status", "--rebuild", "--output", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "ce", "focal", "--metric", column, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"unknown metric {column!r}. Valid: acc, nll" in err and "Traceback" not in err
