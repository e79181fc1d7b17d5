"""The report's figures read at a glance: every colour of a reliability diagram is in its
legend, bins are labelled with their counts and sparse bins are pale, up to 20 methods never
share a style, names are never read as mathtext, and a stored run's training log gives its loss
terms and selected epoch."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from calibench.evaluation.metrics import calibration_bins, equal_width_edges
from calibench.evaluation.mixing import MixingResult
from calibench.report import figures

CE_RUNS = Path(__file__).resolve().parents[1] / "results/digits-3seeds/runs/digits/small_cnn/ce"


def mixed_bins():
    """Bins with over- and under-confident bins and a bin of 2 samples."""
    rng = np.random.default_rng(0)
    conf = np.r_[rng.uniform(0.2, 1.0, 400), [0.05, 0.06]]
    hit = rng.uniform(size=len(conf)) < np.where(conf < 0.5, conf + 0.3, conf - 0.15)
    return calibration_bins(conf, hit.astype(float), equal_width_edges(15))


def bar_colours(axis) -> set[tuple[float, float, float]]:
    return {tuple(np.round(to_rgb(p.get_facecolor()), 4)) for p in axis.patches}


def test_every_colour_of_a_reliability_diagram_is_in_its_legend():
    bins = mixed_bins()
    over = bins.confidence > bins.accuracy
    assert over[bins.counts > 0].any() and (~over[bins.counts > 0]).any()
    assert ((bins.counts > 0) & (bins.counts < figures.SPARSE_BIN)).any()
    fig = figures.reliability_figure(bins, "ce | digits")
    top, bottom = fig.axes
    legend = {
        tuple(np.round(to_rgb(h.get_facecolor()), 4)) for h in top.get_legend().legend_handles
    }
    assert bar_colours(top) == legend
    assert len(legend) == 4
    labels = [t.get_text() for t in bottom.texts]
    assert labels == [f"{int(n)}" if n else "" for n in bins.counts]
    plt.close(fig)


def test_twenty_methods_never_share_a_style():
    styles = [figures.method_style(i) for i in range(20)]
    assert len({(s["color"], s["marker"], s["linestyle"]) for s in styles}) == 20
    assert len({s["marker"] for s in styles}) == 20
    assert {s["color"] for s in styles} == set(figures.PALETTE)


def test_mixing_figure_with_thirteen_methods_draws_thirteen_styles():
    lambdas = np.linspace(0, 1, 11)
    result = MixingResult(lambdas, 0.5 + 0.4 * np.abs(lambdas - 0.5), 0.9, 0.8, 10, 500)
    fig = figures.mixing_figure({f"m{i}": result for i in range(13)}, "digits")
    lines = [ln for ln in fig.axes[0].lines if ln.get_marker() not in (None, "None")]
    assert len({(ln.get_color(), ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 13
    plt.close(fig)


def test_names_are_not_mathtext():
    title = "ce_$\\nope$ | digits"
    fig = figures.reliability_figure(mixed_bins(), title)
    fig.savefig(io.BytesIO(), format="png")
    assert fig.axes[0].get_title().startswith("ce_\\$\\nope\\$")
    plt.close(fig)
    shift = pd.DataFrame({"method": ["a$\\x$", "b"], "severity": [1, 1], "ece": [0.1, 0.2]})
    fig = figures.shift_figure(shift, "digits-c | $\\y$")
    fig.savefig(io.BytesIO(), format="png")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a\\$\\x\\$", "b"]
    plt.close(fig)


def test_training_log_terms_and_selected_epoch():
    """A committed 30-epoch ce run of digits-3seeds: the tie over every epoch picks the first."""
    run_dir = next(CE_RUNS.glob("seed0-*"))
    log = figures.read_log(run_dir)
    assert len(log) == 30 and figures.loss_terms(log) == ["loss", "ce"]
    first_best = log.loc[log["val_acc"] == log["val_acc"].max(), "epoch"].min()
    assert figures.best_epoch(log) == int(first_best)
    tied = log.assign(val_acc=[0.5] * len(log))
    assert figures.best_epoch(tied) == 1
