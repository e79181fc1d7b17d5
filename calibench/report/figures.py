"""Every figure of the report: reliability diagrams, training curves, the mixing diagnostic, the
ablation plots and the dataset-shift box plots. Each is saved as PNG (and PDF where the report
lists one); definitions: docs/report.md, "Figures".

Names in titles and legends are user input, so they pass through :func:`plain` (a ``$`` would
otherwise start matplotlib's mathtext). Methods are told apart by a colour-blind-safe palette
(Petroff 2021, matplotlib's ``petroff10``) combined with a distinct marker per method, and a
dashed line from the eleventh method on: up to 20 methods never share a style.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.style  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from calibench.errors import CalibenchError  # noqa: E402
from calibench.evaluation.metrics import BinStats  # noqa: E402
from calibench.evaluation.mixing import MixingResult  # noqa: E402
from calibench.store.files import RunDir  # noqa: E402

FORMATS = ("png", "pdf")
LOG_BOOKKEEPING = ("epoch", "lr", "seconds")
"""Columns of ``log.csv`` that are neither a loss term nor a validation metric."""
PALETTE: tuple[str, ...] = tuple(
    matplotlib.style.library["petroff10"]["axes.prop_cycle"].by_key()["color"]
)
"""Petroff (2021), "Accessible Color Sequences for Data Visualization", arXiv:2107.02270."""
MARKERS: tuple[str, ...] = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d")
MARKERS += ("8", "H", "1", "2", "3", "4", "+")
HATCHES = ("", "//", "\\\\", "xx", "..")
SPARSE_BIN = 10
"""Bins with fewer samples are drawn pale: the accuracy of fewer than 10 outcomes has a
standard error of up to 0.5 / sqrt(n) > 0.15."""
BAR, OVER, UNDER = PALETTE[0], PALETTE[2], PALETTE[1]


def plain(text: Any) -> str:
    """``text`` shown literally by matplotlib (a ``$`` escaped, so no mathtext is parsed)."""
    return str(text).replace("$", r"\$")


def method_style(index: int) -> dict[str, Any]:
    """Colour, marker and line style of the ``index``-th method of a figure: distinct for the
    first len(MARKERS) = 20 methods."""
    return {
        "color": PALETTE[index % len(PALETTE)],
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": "-" if index % (2 * len(PALETTE)) < len(PALETTE) else "--",
    }


def save_figure(fig: plt.Figure, stem: Path, formats: tuple[str, ...] = FORMATS) -> bytes:
    """Save ``fig`` as ``stem.<format>`` for each format (a suffix of ``stem`` is replaced),
    close it, and return its PNG bytes (for embedding in the HTML report)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    for fmt in formats:
        if fmt == "png":
            stem.with_suffix(".png").write_bytes(buffer.getvalue())
        else:
            fig.savefig(stem.with_suffix(f".{fmt}"))
    plt.close(fig)
    return buffer.getvalue()


def tint(colour: str, share: float) -> tuple[float, float, float]:
    """``colour`` mixed with white: ``share`` of the colour, the rest white (an opaque pale
    shade, so overlapping bars never blend into a colour the legend lacks)."""
    rgb = np.asarray(to_rgb(colour))
    return tuple(share * rgb + (1.0 - share))


GAPS = (
    ("over-confident (conf > acc)", OVER, "//"),
    ("under-confident (acc > conf)", UNDER, "\\\\"),
)


def _gap_bars(axis: plt.Axes, bins: BinStats) -> None:
    """The gap between accuracy and mean confidence of each non-empty bin, hatched and opaque:
    one colour where the bin is over-confident (confidence above accuracy), another where it
    is under-confident."""
    lo, width = bins.edges[:-1], np.diff(bins.edges)
    for (_, colour, hatch), over in zip(GAPS, (True, False), strict=True):
        keep = (bins.counts > 0) & ((bins.confidence > bins.accuracy) == over)
        low = np.minimum(bins.accuracy, bins.confidence)[keep]
        high = np.maximum(bins.accuracy, bins.confidence)[keep]
        axis.bar(
            lo[keep],
            high - low,
            bottom=low,
            width=width[keep],
            align="edge",
            color=tint(colour, 0.45),
            edgecolor=colour,
            hatch=hatch,
            linewidth=0.6,
        )


def _reliability_legend() -> list[Patch]:
    """Legend entries of a reliability diagram: every colour it draws."""
    return [
        Patch(facecolor=BAR, edgecolor="black", label="accuracy"),
        Patch(facecolor=tint(BAR, 0.35), edgecolor="black", label=f"< {SPARSE_BIN} samples"),
        *(Patch(facecolor=tint(c, 0.45), edgecolor=c, hatch=h, label=t) for t, c, h in GAPS),
    ]


def _count_bars(axis: plt.Axes, bins: BinStats) -> None:
    """The confidence histogram (fraction of samples per bin), each bar labelled with its
    sample count."""
    lo, width = bins.edges[:-1], np.diff(bins.edges)
    fraction = bins.counts / max(bins.total, 1)
    bars = axis.bar(
        lo, fraction, width=width, align="edge", color="#7d7d7d", edgecolor="black", linewidth=0.6
    )
    labels = [f"{int(n)}" if n else "" for n in bins.counts]
    axis.bar_label(bars, labels, fontsize=5.5, padding=1, rotation=90)
    axis.set_ylim(0, 1.45 * max(fraction.max(), 1e-9))


def reliability_figure(bins: BinStats, title: str) -> plt.Figure:
    """Accuracy per confidence bin (pale below :data:`SPARSE_BIN` samples) with its gap to the
    bin's mean confidence (over- and under-confidence in two colours), and beneath it the
    confidence histogram with each bin's sample count; the ECE of ``bins`` is in the title."""
    lo, width = bins.edges[:-1], np.diff(bins.edges)
    filled = bins.counts > 0
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.2, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    colours = [BAR if n >= SPARSE_BIN else tint(BAR, 0.35) for n in bins.counts[filled]]
    top.bar(
        lo[filled],
        bins.accuracy[filled],
        width=width[filled],
        align="edge",
        color=colours,
        edgecolor="black",
        linewidth=0.6,
    )
    _gap_bars(top, bins)
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    heading = "\n".join(textwrap.wrap(plain(title), 52))
    top.set_title(f"{heading}\nECE {100 * bins.expected_error():.2f}%", fontsize=8)
    top.legend(handles=_reliability_legend(), loc="upper left", fontsize=6)
    _count_bars(bottom, bins)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("fraction (n)")
    fig.tight_layout()
    return fig


def read_log(run_dir: Path) -> pd.DataFrame:
    """A run's per-epoch log (``log.csv``: epoch, lr, loss and its terms, val_acc, val_nll,
    val_ece, seconds)."""
    path = RunDir(run_dir) / RunDir.LOG
    try:
        log = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CalibenchError(f"cannot read the training log {path} ({exc}).") from None
    missing = {"epoch", "loss", "val_acc", "val_ece"} - set(log.columns)
    if missing or log.empty:
        raise CalibenchError(
            f"{path} lacks {', '.join(sorted(missing)) or 'rows'}; it is not a calibench log."
        )
    return log


def best_epoch(log: pd.DataFrame) -> int:
    """The selected epoch: the first epoch with the highest validation accuracy (the trainer's
    model-selection rule, docs/report.md)."""
    return int(log.loc[log["val_acc"].idxmax(), "epoch"])


def loss_terms(log: pd.DataFrame) -> list[str]:
    """The total loss and every term a method logged, in log order."""
    return [c for c in log.columns if c not in LOG_BOOKKEEPING and not c.startswith("val_")]


def training_curves_figure(
    log: pd.DataFrame, title: str, selected: int | None = None
) -> plt.Figure:
    """Left: the training loss and each logged term per epoch (epoch means). Right: validation
    accuracy and ECE (percent) per epoch. A dashed line marks the selected epoch."""
    selected = best_epoch(log) if selected is None else selected
    marker = "o" if len(log) <= 30 else None
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for term in loss_terms(log):
        left.plot(
            log["epoch"],
            log[term],
            marker=marker,
            markersize=3,
            linewidth=2 if term == "loss" else 1.2,
            label="loss (total)" if term == "loss" else plain(term),
        )
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (epoch mean)")
    left.legend(fontsize=7)
    right.plot(log["epoch"], 100 * log["val_acc"], marker=marker, markersize=3, label="val acc")
    right.plot(log["epoch"], 100 * log["val_ece"], marker=marker, markersize=3, label="val ECE")
    right.set_xlabel("epoch")
    right.set_ylabel("percent")
    right.set_ylim(0, 100)
    for axis in (left, right):
        axis.axvline(selected, color="grey", linestyle="--", linewidth=1)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    right.plot([], [], color="grey", linestyle="--", label=f"selected epoch {selected}")
    right.legend(fontsize=7)
    fig.suptitle(plain(title), fontsize=9)
    fig.tight_layout()
    return fig


def mixing_figure(results: Mapping[str, MixingResult], title: str) -> plt.Figure:
    """Mean confidence of mixed test samples against the mixing coefficient, one line (colour
    and marker) per method; the dotted line of the same colour is the method's mean confidence
    on the unmixed samples."""
    fig, axis = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, result) in enumerate(results.items()):
        style = method_style(i)
        axis.plot(
            result.lambdas,
            result.mean_confidence,
            markersize=4,
            **style,
            label=f"{plain(method)} (agreement {100 * result.agreement:.1f}%)",
        )
        axis.axhline(result.raw_confidence, color=style["color"], linestyle=":", linewidth=1)
    axis.set_xlabel(r"mixing coefficient $\lambda$ ($x' = \lambda x_i + (1-\lambda) x_j$)")
    axis.set_ylabel("mean confidence (max softmax)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.set_title(plain(title) + "\ndotted: mean confidence on unmixed test images", fontsize=9)
    fig.tight_layout()
    return fig


def ablation_figure(group: pd.DataFrame, title: str, parameter: str) -> plt.Figure:
    """ECE (before and after TS) and accuracy against one parameter's values, mean ± std over
    seeds (``group``: rows of :func:`calibench.report.sections.ablation_table`)."""
    x = [plain(v) for v in group["value"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.0))
    for i, metric in enumerate(("ece", "ece_ts")):
        style = method_style(i)
        left.errorbar(
            x,
            100 * group[metric],
            yerr=100 * group[f"{metric}_std"].fillna(0),
            capsize=3,
            label=metric,
            **style,
        )
    right.errorbar(
        x, 100 * group["acc"], yerr=100 * group["acc_std"].fillna(0), capsize=3, **method_style(0)
    )
    left.set_ylabel("ECE (%)")
    left.legend(fontsize=8)
    right.set_ylabel("accuracy (%)")
    for axis in (left, right):
        axis.set_xlabel(plain(parameter))
    fig.suptitle(plain(title), fontsize=9)
    fig.tight_layout()
    return fig


def shift_figure(group: pd.DataFrame, title: str, metric: str = "ece") -> plt.Figure:
    """Per severity, a box per method of ``metric`` (percent) over the corruptions (``group``:
    one row per method, severity and corruption, the mean over seeds)."""
    methods = sorted(group["method"].unique())
    severities = sorted(group["severity"].unique())
    fig, ax = plt.subplots(figsize=(2.4 + 0.45 * len(severities) * len(methods), 3.8))
    width = 0.8 / len(methods)
    handles = []
    for i, method in enumerate(methods):
        data = [
            100 * group[(group["method"] == method) & (group["severity"] == s)][metric]
            for s in severities
        ]
        positions = [s + (i - (len(methods) - 1) / 2) * width for s in severities]
        box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True)
        style = method_style(i)
        hatch = HATCHES[(i // len(PALETTE)) % len(HATCHES)]
        for patch in box["boxes"]:
            patch.set(facecolor=style["color"], hatch=hatch)
        handles.append(Patch(facecolor=style["color"], hatch=hatch, label=plain(method)))
    ax.set_xticks(severities, [str(s) for s in severities])
    ax.set_xlabel("severity")
    ax.set_ylabel(f"{metric.upper()} (%) over corruptions")
    ax.set_title(plain(title), fontsize=9)
    ax.legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
