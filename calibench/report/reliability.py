"""Reliability diagrams (DeGroot & Fienberg 1983; Niculescu-Mizil & Caruana 2005; Guo et al.
2017), drawn from the same :func:`calibench.evaluation.metrics.calibration_bins` that
computes ECE."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calibench.evaluation.metrics import BinStats  # noqa: E402
from calibench.report.figures import save_figure  # noqa: E402


def reliability_figure(bins: BinStats, title: str) -> plt.Figure:
    """Accuracy per confidence bin with its gap to the diagonal, and the confidence histogram
    (fraction of samples per bin) beneath; the ECE of ``bins`` is in the title."""
    lo, hi = bins.edges[:-1], bins.edges[1:]
    width, centre = hi - lo, (lo + hi) / 2
    filled = bins.counts > 0
    acc = np.where(filled, bins.accuracy, 0.0)
    conf = np.where(filled, bins.confidence, centre)

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.2, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(
        lo,
        acc,
        width=width,
        align="edge",
        color="#3b6fb6",
        edgecolor="black",
        linewidth=0.6,
        label="accuracy",
    )
    top.bar(
        lo[filled],
        (conf - acc)[filled],
        bottom=acc[filled],
        width=width[filled],
        align="edge",
        color="#e4572e",
        alpha=0.35,
        edgecolor="#e4572e",
        hatch="//",
        linewidth=0.6,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    heading = "\n".join(textwrap.wrap(title, 52))
    top.set_title(f"{heading}\nECE {100 * bins.expected_error():.2f}%", fontsize=9)
    top.legend(loc="upper left", fontsize=7)
    bottom.bar(
        lo,
        bins.counts / max(bins.total, 1),
        width=width,
        align="edge",
        color="#7d7d7d",
        edgecolor="black",
        linewidth=0.6,
    )
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("fraction")
    fig.tight_layout()
    return fig


def reliability_diagram(
    bins: BinStats, title: str, path: Path, formats: tuple[str, ...] = ("png", "pdf")
) -> None:
    """Draw :func:`reliability_figure` and save it at ``path`` in each of ``formats`` (the
    suffix of ``path`` is replaced by each format's)."""
    save_figure(reliability_figure(bins, title), path, formats)
