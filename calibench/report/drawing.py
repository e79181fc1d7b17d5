"""Every figure of ``report/`` drawn into its folder (PNG, and PDF where docs/report.md lists
one), and the page's sections that show them: reliability diagrams, training curves, the mixing
diagnostic (computed by :mod:`calibench.evaluation.mixing`), the ablation plots and the
dataset-shift box plots; also the calibrator section and the settings of every run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.evaluation.metrics import calibration_bins, equal_width_edges, softmax, top_label
from calibench.evaluation.mixing import MixingResult, mixing_diagnostic
from calibench.report import figures, sections
from calibench.report.collect import StoredRun
from calibench.report.html import Figure, Part
from calibench.report.table import Cell, Column, Row, Table, text_column
from calibench.store.files import RunDir, read_json, write_text
from calibench.store.index import Store

Diagrams = dict[str, tuple[bytes, bytes]]
"""Run id -> the PNGs of its reliability diagrams before and after temperature scaling."""


def relative(text: str, store: Store) -> str:
    """``text`` with the results folder's absolute path dropped from every path in it, so the
    page names run folders relative to the results folder (``runs/...``) on any machine."""
    for root in {str(store.root.resolve()), str(store.root.absolute())}:
        text = text.replace(root + "/", "")
    return text


def _by_group(runs: list[StoredRun]) -> dict[tuple[str, str], list[StoredRun]]:
    groups: dict[tuple[str, str], list[StoredRun]] = {}
    for run in sorted(runs, key=lambda r: (r.spec.dataset, r.spec.backbone)):
        groups.setdefault((run.spec.dataset, run.spec.backbone), []).append(run)
    return groups


def first_seeds(runs: list[StoredRun], labels: dict[str, str]) -> dict[str, StoredRun]:
    """Per configuration label, its run of the lowest seed (the page's diagrams and the mixing
    diagnostic show that one)."""
    chosen: dict[str, StoredRun] = {}
    for run in sorted(runs, key=lambda r: (labels[r.spec.config_id], r.spec.seed)):
        chosen.setdefault(labels[run.spec.config_id], run)
    return chosen


def draw_diagrams(runs: list[StoredRun], table: pd.DataFrame, folder) -> Diagrams:
    """Two reliability diagrams per run (PNG and PDF): the test logits before and after
    temperature scaling, on the run's equal-width ECE bins."""
    temperatures = dict(zip(table["run_id"], table["temperature"], strict=True))
    drawn: Diagrams = {}
    for name, spec, logits in runs:
        t = temperatures[spec.run_id]
        pngs = []
        for suffix, scale, what in (("", 1.0, "before TS"), ("_ts", t, f"after TS, T={t:.1f}")):
            conf, hit = top_label(softmax(logits["test_logits"] / scale), logits["test_labels"])
            bins = calibration_bins(conf, hit, equal_width_edges(spec.training.n_bins))
            title = f"{spec.method} | {spec.dataset} | {spec.backbone} | seed {spec.seed} ({what})"
            figure = figures.reliability_figure(bins, title)
            pngs.append(figures.save_figure(figure, folder / f"{name}{suffix}"))
        drawn[spec.run_id] = (pngs[0], pngs[1])
    return drawn


def diagrams_part(runs: list[StoredRun], labels: dict[str, str], drawn: Diagrams) -> Part:
    """Per dataset and backbone, each configuration's lowest seed before and after TS."""
    part = Part(
        "diagrams",
        "Reliability diagrams",
        [
            "Test set, the equal-width bins of the ECE column; the lowest seed of each "
            "configuration (every run's diagrams are in diagrams/). Bars: accuracy per "
            f"confidence bin, pale below {figures.SPARSE_BIN} samples; hatched: the gap to the "
            "bin's mean confidence (over- or under-confident); lower panel: the fraction of "
            "samples per bin, with each bin's count."
        ],
    )
    for (dataset, backbone), members in _by_group(runs).items():
        child = Part(f"diagrams-{dataset}-{backbone}", f"{dataset} / {backbone}", columns=2)
        for label, run in first_seeds(members, labels).items():
            before, after = drawn[run.spec.run_id]
            child.figures.append(Figure(f"{label} (seed {run.spec.seed}): before TS", before))
            child.figures.append(Figure(f"{label} (seed {run.spec.seed}): after TS", after))
        part.children.append(child)
    return part


def curves_part(store: Store, runs: list[StoredRun], folder) -> Part:
    """The training curves of every run from its ``log.csv`` (PNG and PDF), per dataset and
    backbone; a run whose log cannot be read gets a note."""
    part = Part(
        "curves",
        "Training curves",
        [
            "Every run: the training loss and its terms (epoch means), validation accuracy and "
            "ECE per epoch; dashed: the selected (best-validation) epoch."
        ],
    )
    for (dataset, backbone), members in _by_group(runs).items():
        child = Part(f"curves-{dataset}-{backbone}", f"{dataset} / {backbone}")
        for name, spec, _ in sorted(members, key=lambda r: (r.spec.method, r.spec.seed)):
            run_dir = store.run_dir(spec)
            try:
                log = figures.read_log(run_dir)
            except CalibenchError as exc:
                child.notes.append(relative(f"training curves of {name} skipped: {exc}", store))
                continue
            selected = (read_json(RunDir(run_dir) / RunDir.METRICS) or {}).get("best_epoch")
            selected = int(selected or figures.best_epoch(log))
            title = f"{spec.method} | {dataset} | {backbone} | seed {spec.seed}"
            figure = figures.training_curves_figure(log, title, selected)
            png = figures.save_figure(figure, folder / name)
            child.figures.append(Figure(f"{spec.method}, seed {spec.seed}", png))
        part.children.append(child)
    return part


def mixing_of(store: Store, run: StoredRun, samples: int) -> MixingResult:
    """The mixing diagnostic of one run (streamed datasets included: their loaders gather the
    test images it mixes)."""
    return mixing_diagnostic(store.run_dir(run.spec), samples, device="auto")


def mixing_table(results: dict[str, MixingResult], title: str) -> Table:
    """Per configuration: pairs, mean confidence unmixed and at λ = 0.5, the order agreement."""
    names = ["conf. unmixed (%)", "conf. at λ=0.5 (%)", "order agreement (%)"]
    columns = [text_column("method"), text_column("pairs")]
    columns += [Column(n, n, 2, 100.0) for n in names]
    rows = [
        Row([Cell(m), Cell(r.n_pairs), Cell(r.raw_confidence),
             Cell(float(np.interp(0.5, r.lambdas, r.mean_confidence))), Cell(r.agreement)])
        for m, r in results.items()
    ]  # fmt: skip
    return Table(title, columns, rows)


def mixing_rows(dataset: str, backbone: str, results: dict[str, MixingResult]) -> list[dict]:
    """Rows of mixing.csv: agreement, pairs, unmixed confidence and m(l) at every l."""
    rows = []
    for method, r in results.items():
        row = {"dataset": dataset, "backbone": backbone, "method": method, "pairs": r.n_pairs,
               "comparisons": r.n_comparisons, "agreement": r.agreement,
               "raw_confidence": r.raw_confidence}  # fmt: skip
        row.update({f"conf_{x:.2f}": c for x, c in zip(r.lambdas, r.mean_confidence, strict=True)})
        rows.append(row)
    return rows


def mixing_part(
    store: Store, runs: list[StoredRun], labels: dict[str, str], folder, samples: int
) -> Part:
    """The mixing diagnostic of each configuration's lowest seed, per dataset and backbone: its
    figure (PNG and PDF under mixing/) and table, and mixing.csv; ``samples`` 0 turns it off."""
    part = Part("mixing", "Mixing diagnostic", [sections.MIXING_INTRO])
    rows = []
    for (dataset, backbone), members in _by_group(runs).items() if samples > 0 else []:
        child = Part(f"mixing-{dataset}-{backbone}", f"{dataset} / {backbone}")
        results = {}
        for label, run in first_seeds(members, labels).items():
            try:
                results[label] = mixing_of(store, run, samples)
            except (CalibenchError, OSError, RuntimeError) as exc:
                child.notes.append(relative(f"mixing diagnostic of {label} skipped: {exc}", store))
        if results:
            title = f"{dataset} | {backbone}: mixed test images"
            stem = folder / "mixing" / f"{dataset}_{backbone.replace('/', '-')}"
            png = figures.save_figure(figures.mixing_figure(results, title), stem)
            child.figures.append(Figure(title, png))
            child.tables.append(mixing_table(results, f"{dataset} / {backbone}: order agreement"))
            rows += mixing_rows(dataset, backbone, results)
        part.children.append(child)
    if rows:
        write_text(folder / "mixing.csv", pd.DataFrame(rows).to_csv(index=False))
    return part


def draw_ablation(ablation: pd.DataFrame, folder) -> list[Figure]:
    """One PNG per (dataset, backbone, method, parameter) of an ablation."""
    drawn = []
    keys = [*sections.GROUP, "parameter"]
    for (dataset, backbone, method, param), group in (
        ablation.groupby(keys) if len(ablation) else []
    ):
        title = f"{method} | {dataset} | {backbone}: {param}"
        stem = folder / f"{dataset}_{backbone.replace('/', '-')}_{method}_{param}"
        png = figures.save_figure(figures.ablation_figure(group, title, param), stem, ("png",))
        drawn.append(Figure(title, png))
    return drawn


def draw_shift(shift: pd.DataFrame, folder) -> list[Figure]:
    """One box-plot PNG per shifted set, backbone and calibrator (ECE over corruptions)."""
    drawn = []
    for title, group in sections.shift_groups(shift) if len(shift) else []:
        name = title.replace(" | calibrator: ", "_").replace(" | ", "_").replace("/", "-")
        png = figures.save_figure(
            figures.shift_figure(group, title), folder / f"shift_{name}", ("png",)
        )
        drawn.append(Figure(title, png))
    return drawn


def settings(store: Store, runs: list[StoredRun]) -> list[tuple[str, str]]:
    """Each run's ``config.json`` as stored (its path relative to the results folder)."""
    out = []
    for run in sorted(runs, key=lambda r: (r.spec.method, r.spec.seed)):
        path = RunDir(store.run_dir(run.spec)) / RunDir.CONFIG
        try:
            text = path.read_text()
        except OSError:
            text = json.dumps(run.spec.to_dict(), indent=2, sort_keys=True)
        where = path.relative_to(store.root).as_posix()
        out.append(
            (f"{run.spec.method}, seed {run.spec.seed}, run {run.spec.run_id} ({where})", text)
        )
    return out
