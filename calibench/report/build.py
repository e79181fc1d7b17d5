"""``calibench report``: every table, figure and page of ``<output>/report/``, rebuilt from the
store alone (docs/report.md).

The steps run in order: collect the runs and recompute their metrics
(:mod:`calibench.report.collect`), decide the marks (:mod:`calibench.report.marks`), fit the
post-hoc calibrators and build the section data (:mod:`calibench.report.sections`,
:mod:`calibench.report.published`), draw the figures (:mod:`calibench.report.drawing`), then
write each format: markdown, csv and LaTeX here, the page through :mod:`calibench.report.html`.
Nothing here prints: warnings go to the caller's ``warn`` and the terminal tables are returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from calibench.errors import CalibenchError
from calibench.evaluation.record import Transform, fit_calibrators
from calibench.registry import CALIBRATORS
from calibench.report import drawing, sections, summary
from calibench.report.collect import StoredRun, bins_caption, collect, config_labels, summarise
from calibench.report.html import Figure, Part, page
from calibench.report.marks import Marks, table_marks
from calibench.report.published import compare_published, comparison_table, nothing_matches
from calibench.report.table import Table, latex, markdown
from calibench.store.files import write_text
from calibench.store.index import Store

FORMATS = ("md", "csv", "tex", "html")
COMPARE = ("published",)
Warn = Callable[[str], None]


@dataclass
class Report:
    """What ``calibench report`` produced: its folder and the summary tables for the
    terminal."""

    folder: Path
    terminal: list[Table] = field(default_factory=list)


@dataclass
class Results:
    """Everything the report's formats share, computed once."""

    table: pd.DataFrame
    runs: list[StoredRun]
    summary: pd.DataFrame
    labels: dict[str, str]
    marks: Marks
    calibrators: pd.DataFrame
    calibrator_summary: pd.DataFrame
    ablation: pd.DataFrame
    shift: pd.DataFrame
    comparison: pd.DataFrame | None


def check_options(
    formats: tuple[str, ...], compare: tuple[str, ...], calibrators: tuple[str, ...]
) -> None:
    """Unknown formats, comparisons or calibrators are one clear error, before any work."""
    for name in calibrators:
        CALIBRATORS.get(name)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CalibenchError(
            f"unknown report format {', '.join(bad)}. Valid: {', '.join(FORMATS)}."
        )
    bad = [c for c in compare if c not in COMPARE]
    if bad:
        raise CalibenchError(f"unknown --compare {', '.join(bad)}. Valid: {', '.join(COMPARE)}.")


def fit_transforms(
    runs: list[StoredRun], names: tuple[str, ...]
) -> dict[str, dict[str, Transform]]:
    """Per run id: ``none`` and each calibrator fitted on the run's validation logits."""
    return {
        run.spec.run_id: fit_calibrators(names, run.logits["val_logits"], run.logits["val_labels"])
        for run in runs
    }


def compute(
    store: Store, compare: tuple[str, ...], calibrators: tuple[str, ...], warn: Warn
) -> Results:
    """Collect the runs, summarise them, decide the marks, fit the calibrators and build the
    calibrator, ablation, shift and published-numbers data."""
    table, runs = collect(store, warn)
    summary_frame = summarise(table)
    columns = summary.summary_metrics(summary_frame, False) + summary.summary_metrics(
        summary_frame, True
    )
    transforms = fit_transforms(runs, calibrators)
    shift_runs = [(run, store.run_dir(run.spec), transforms[run.spec.run_id]) for run in runs]
    labels = config_labels(table)
    calibrated = sections.calibrator_table(runs, transforms)
    return Results(
        table=table,
        runs=runs,
        summary=summary_frame,
        labels=labels,
        marks=table_marks(table, summary_frame, columns),
        calibrators=calibrated,
        calibrator_summary=sections.calibrator_summary(calibrated, labels),
        ablation=sections.ablation_table(table),
        shift=sections.shift_table(shift_runs, warn),
        comparison=compare_published(summary_frame, table) if "published" in compare else None,
    )


def _csv(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False))


def write_csv(folder: Path, results: Results) -> None:
    """results.csv (every run, fractions), summary.csv, calibrators.csv, and ablation.csv and
    shift.csv when the store has ablations or shift logits."""
    _csv(folder / "results.csv", results.table)
    _csv(folder / "summary.csv", results.summary)
    _csv(folder / "calibrators.csv", results.calibrators)
    if not results.ablation.empty:
        _csv(folder / "ablation.csv", results.ablation)
    if not results.shift.empty:
        _csv(folder / "shift.csv", results.shift)


def _document(title: str, intro: str, tables: list[Table]) -> str:
    head = f"# {title}\n\n" + (f"{intro}\n\n" if intro else "")
    return head + "\n".join(markdown(t) for t in tables)


def write_markdown(folder: Path, results: Results) -> None:
    """results.md (summary, OOD, every run, published numbers), calibrators.md, and
    ablation.md and shift.md when there are ablations or shift logits."""
    tables = summary.summary_tables(results.summary, results.marks, results.table, "md")
    tables += summary.summary_tables(results.summary, results.marks, results.table, "md", True)
    tables.append(summary.per_run_table(results.table))
    text = _document(
        "calibench results",
        f"Every number recomputed from the stored logits ({bins_caption(results.table)}).",
        tables,
    )
    if results.comparison is not None:
        text += "\n" + (
            markdown(comparison_table(results.comparison))
            if not results.comparison.empty
            else f"### Published numbers\n\n{nothing_matches()}\n"
        )
    write_text(folder / "results.md", text)
    calibrator_tables = sections.calibrator_tables(results.calibrator_summary)
    write_text(
        folder / "calibrators.md",
        _document("Post-hoc calibrators", sections.CALIBRATOR_INTRO, calibrator_tables),
    )
    if not results.ablation.empty:
        tables = sections.ablation_tables(results.ablation)
        write_text(folder / "ablation.md", _document("Ablations", "", tables))
    if not results.shift.empty:
        tables = sections.severity_tables(results.shift)
        write_text(folder / "shift.md", _document("Dataset shift", "", tables))


def write_latex(folder: Path, results: Results) -> None:
    """results.tex: per dataset and backbone, the summary table and the OOD table, each one
    float that fits the text width."""
    tables = summary.summary_tables(results.summary, results.marks, results.table, "tex")
    tables += summary.summary_tables(results.summary, results.marks, results.table, "tex", True)
    head = (
        "% calibench results: needs \\usepackage{booktabs} and \\usepackage{graphicx}; tables "
        "wider than the text are scaled down to \\linewidth.\n"
    )
    write_text(folder / "results.tex", head + "\n\n".join(latex(t) for t in tables) + "\n")


def published_part(results: Results) -> Part:
    """The page's published-numbers section (empty without ``--compare published``)."""
    part = Part("published", "Published numbers")
    if results.comparison is not None and results.comparison.empty:
        part.notes.append(nothing_matches())
    elif results.comparison is not None:
        part.tables.append(comparison_table(results.comparison))
    return part


@dataclass
class Drawn:
    """The figures drawn for every format: diagrams per run, ablation and shift plots."""

    diagrams: drawing.Diagrams
    ablation: list[Figure]
    shift: list[Figure]


def html_parts(
    store: Store, folder: Path, results: Results, drawn: Drawn, mixing_samples: int
) -> list[Part]:
    """Every section of the page, in order: summary, published numbers, calibrators, dataset
    shift, OOD, ablations, reliability diagrams, mixing diagnostic, training curves, every run
    (with its settings) and the glossary."""
    marks, table, frame = results.marks, results.table, results.summary
    shift = sections.severity_tables(results.shift)
    intro = f"Every number recomputed from the stored logits ({bins_caption(table)})."
    return [
        Part("summary", "Summary", [intro], summary.summary_tables(frame, marks, table, "html")),
        published_part(results),
        Part("calibrators", "Post-hoc calibrators", [sections.CALIBRATOR_INTRO],
             sections.calibrator_tables(results.calibrator_summary)),
        Part("shift", "Dataset shift", [], shift, drawn.shift),
        Part("ood", "Out-of-distribution detection",
             tables=summary.summary_tables(frame, marks, table, "html", ood=True)),
        Part("ablations", "Ablations", [], sections.ablation_tables(results.ablation),
             drawn.ablation),
        drawing.diagrams_part(results.runs, results.labels, drawn.diagrams),
        drawing.mixing_part(store, results.runs, results.labels, folder, mixing_samples),
        drawing.curves_part(store, results.runs, folder / "curves"),
        Part("runs", "Every run", tables=[summary.per_run_table(table)],
             details=drawing.settings(store, results.runs)),
        Part("glossary", "Glossary", tables=[summary.glossary_table()]),
    ]  # fmt: skip


def build_report(
    store: Store,
    formats: tuple[str, ...] = ("md", "csv", "html"),
    compare: tuple[str, ...] = (),
    mixing_samples: int = 1000,
    calibrators: tuple[str, ...] | None = None,
    warn: Warn | None = None,
) -> Report:
    """Write ``<output>/report/``: results.csv (fractions), results.md (percent), results.tex
    and index.html when asked, reliability diagrams, and the calibrator, ablation and shift
    files; ``compare`` ("published") adds the published numbers beside the measured ones.
    ``calibrators`` (default: every registered one) are fitted on each run's validation logits.
    Returns the folder and the summary tables for the terminal (docs/report.md)."""
    calibrators = tuple(CALIBRATORS.names()) if calibrators is None else calibrators
    check_options(formats, compare, calibrators)
    results = compute(store, compare, calibrators, warn or (lambda message: None))
    folder = store.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    drawn = Drawn(
        drawing.draw_diagrams(results.runs, results.table, folder / "diagrams"),
        drawing.draw_ablation(results.ablation, folder / "ablation"),
        drawing.draw_shift(results.shift, folder / "shift"),
    )
    if "csv" in formats:
        write_csv(folder, results)
    if "md" in formats:
        write_markdown(folder, results)
    if "tex" in formats:
        write_latex(folder, results)
    if "html" in formats:
        parts = html_parts(store, folder, results, drawn, mixing_samples)
        subtitle = (
            f"{len(results.runs)} complete runs in this results folder; every number is "
            "recomputed from the stored logits."
        )
        write_text(folder / "index.html", page(parts, subtitle) + "\n")
    terminal = summary.summary_tables(results.summary, results.marks, results.table, "terminal")
    return Report(folder, terminal)
