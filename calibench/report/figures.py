"""Report figures beside the reliability diagrams: training curves from a run's ``log.csv`` and
the mixing diagnostic of :mod:`calibench.evaluation.mixing`. Each figure is saved as PNG and PDF;
their definitions are in docs/report.md, "Figures"."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from calibench.errors import CalibenchError  # noqa: E402
from calibench.evaluation.mixing import MixingResult  # noqa: E402
from calibench.store.files import RunDir  # noqa: E402

FORMATS = ("png", "pdf")
LOG_BOOKKEEPING = ("epoch", "lr", "seconds")
"""Columns of ``log.csv`` that are neither a loss term nor a validation metric."""


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
            label="loss (total)" if term == "loss" else term,
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
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def mixing_figure(results: Mapping[str, MixingResult], title: str) -> plt.Figure:
    """Mean confidence of mixed test samples against the mixing coefficient, one line per
    method; the dotted line of the same colour is the method's mean confidence on the unmixed
    samples."""
    fig, axis = plt.subplots(figsize=(5.2, 3.8))
    for method, result in results.items():
        (line,) = axis.plot(
            result.lambdas,
            result.mean_confidence,
            marker="o",
            markersize=3,
            label=f"{method} (agreement {100 * result.agreement:.1f}%)",
        )
        axis.axhline(result.raw_confidence, color=line.get_color(), linestyle=":", linewidth=1)
    axis.set_xlabel(r"mixing coefficient $\lambda$ ($x' = \lambda x_i + (1-\lambda) x_j$)")
    axis.set_ylabel("mean confidence (max softmax)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    axis.set_title(title + "\ndotted: mean confidence on unmixed test images", fontsize=9)
    fig.tight_layout()
    return fig
