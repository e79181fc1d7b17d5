"""``report/index.html``: the whole report on one self-contained page.

Every image is embedded as a base64 PNG data URI and the page's few lines of script (sortable
tables) are inline, so the file opens from disk with no network. Per dataset and backbone: the
summary table with the best value per column marked, reliability diagrams before and after
temperature scaling, training curves, the mixing diagnostic, OOD tables when present, and the
exact settings of every run. What each part shows: docs/report.md.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.evaluation.metrics import calibration_bins, equal_width_edges, softmax, top_label
from calibench.evaluation.mixing import MAX_SAMPLES, MixingResult, mixing_diagnostic
from calibench.report.figures import (
    best_epoch,
    mixing_figure,
    read_log,
    save_figure,
    training_curves_figure,
)
from calibench.report.published import COMPARISON_HEADER
from calibench.report.reliability import reliability_figure
from calibench.report.table import GROUP, Marks, best_marks, fmt, label, metric_columns
from calibench.spec import RunSpec
from calibench.store.files import RunDir, read_json, write_text
from calibench.store.index import Store

Run = tuple[str, RunSpec, dict[str, np.ndarray]]

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1, h2, h3 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .6em; border-bottom: 1px solid #e4e4e4; text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
table.sortable th:hover { background: #e6e6e6; }
td.best { font-weight: bold; background: #e8f4e8; }
td.tied { text-decoration: underline; }
.scroll { overflow-x: auto; }
.grid { display: grid; grid-template-columns: 12em repeat(2, minmax(0, 440px)); gap: .4em 1em;
        align-items: center; }
.curves { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
          gap: 1em; }
img { max-width: 100%; height: auto; }
figure { margin: 0; }
figcaption, .note { color: #555; font-size: 90%; }
details { margin: .2em 0; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
nav a { margin-right: 1em; }
"""

SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
    const up = th.dataset.order !== "asc";
    table.querySelectorAll("th").forEach((h) => delete h.dataset.order);
    th.dataset.order = up ? "asc" : "desc";
    const key = (row) => {
      const text = row.cells[col].dataset.sort ?? row.cells[col].textContent;
      const number = parseFloat(text);
      return Number.isNaN(number) ? text : number;
    };
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === "number" && typeof y === "number"
        ? x - y : String(x).localeCompare(String(y));
      return up ? order : -order;
    });
    rows.forEach((row) => table.tBodies[0].appendChild(row));
  }));
}
"""


@dataclass
class Section:
    """The figures and notes gathered for one dataset and backbone."""

    dataset: str
    backbone: str
    reliability: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    curves: list[tuple[str, bytes]] = field(default_factory=list)
    mixing: dict[str, MixingResult] = field(default_factory=dict)
    mixing_png: bytes | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"{self.dataset}-{self.backbone}".replace("/", "-")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{esc(alt)}">'


def _cell(value: Any, text: str, css: str = "") -> str:
    sort = "" if pd.isna(value) else f' data-sort="{esc(value)}"'
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}{sort}>{esc(text)}</td>"


def html_table(header: list[str], rows: list[str], caption: str = "") -> str:
    """A sortable table from header texts and pre-rendered ``<tr>`` rows."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table class="sortable">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def summary_table(group: pd.DataFrame, columns: list[str], marks: Marks) -> str:
    """Method, epochs, seeds and each metric as mean ± std in the table's unit; the cell of a
    marked value gets the class ``best`` or ``tied``."""
    header = ["method", "epochs", "seeds", *[label(c) for c in columns]]
    rows = []
    for index, row in group.iterrows():
        cells = [
            _cell(row["method"], row["method"]),
            _cell(row["epochs"], str(row["epochs"])),
            _cell(row["seeds"], str(row["seeds"])),
        ]
        for column in columns:
            mean, std = row[column], row.get(f"{column}_std")
            text = fmt(mean, column)
            if std is not None and not pd.isna(std) and not pd.isna(mean):
                text += f" ± {fmt(std, column)}"
            mark = marks.get(column, pd.Series(dtype=object)).get(index, "")
            cells.append(_cell(mean, text, mark))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return html_table(header, rows)


def per_run_table(table: pd.DataFrame) -> str:
    """Every run with its keys and metrics (unmarked)."""
    keys = ["dataset", "backbone", "method", "seed", "epochs", "run_id"]
    skip = {*keys, "hparams", "config_id"}
    metrics = [
        c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])
    ]
    rows = [
        "<tr>"
        + "".join(_cell(r[k], str(r[k])) for k in keys)
        + "".join(_cell(r[m], fmt(r[m], m)) for m in metrics)
        + "</tr>"
        for _, r in table.iterrows()
    ]
    return html_table([*keys, *[label(m) for m in metrics]], rows)


def mixing_table(results: dict[str, MixingResult]) -> str:
    """Per method: pairs, mean confidence unmixed and at l = 0.5, and the ordering agreement."""
    header = ["method", "pairs", "conf. unmixed (%)", "conf. at λ=0.5 (%)", "order agreement (%)"]
    rows = []
    for method, r in results.items():
        half = float(np.interp(0.5, r.lambdas, r.mean_confidence))
        rows.append(
            "<tr>"
            + _cell(method, method)
            + _cell(r.n_pairs, str(r.n_pairs))
            + _cell(r.raw_confidence, f"{100 * r.raw_confidence:.2f}")
            + _cell(half, f"{100 * half:.2f}")
            + _cell(r.agreement, f"{100 * r.agreement:.2f}")
            + "</tr>"
        )
    return html_table(header, rows)


def comparison_table(comparison: pd.DataFrame) -> str:
    """Published values beside the measured ones (see :mod:`calibench.report.published`)."""
    header = list(COMPARISON_HEADER)
    rows = [
        "<tr>"
        + _cell(r["dataset"], r["dataset"])
        + _cell(r["measured_backbone"], r["measured_backbone"])
        + _cell(r["method"], f"{r['method']} ({r['published_name']})")
        + _cell(r["metric"], r["metric"])
        + _cell(r["published"], f"{r['published']:.2f}")
        + _cell(r["measured"], "-" if pd.isna(r["measured"]) else f"{r['measured']:.2f}")
        + _cell(r["difference"], "-" if pd.isna(r["difference"]) else f"{r['difference']:+.2f}")
        + _cell(r["verified"], r["verified"])
        + f'<td style="text-align:left">{esc(r["settings"] or "-")}</td>'
        + f'<td style="text-align:left">{esc(r["source"])}</td>'
        + "</tr>"
        for _, r in comparison.iterrows()
    ]
    return html_table(header, rows)


def reliability_pngs(
    name: str, spec: RunSpec, logits: dict[str, np.ndarray], temperature: float, folder: Path
) -> tuple[bytes, bytes]:
    """The run's reliability diagrams before and after temperature scaling: the PNGs that
    :func:`calibench.report.build.draw_diagrams` wrote to ``folder``, drawn there when missing."""
    pngs = []
    for suffix, scale, what in (("", 1.0, "before TS"), ("_ts", temperature, "after TS")):
        path = folder / f"{name}{suffix}.png"
        if not path.exists():
            conf, hit = top_label(softmax(logits["test_logits"] / scale), logits["test_labels"])
            bins = calibration_bins(conf, hit, equal_width_edges(spec.training.n_bins))
            title = f"{spec.method} | {spec.dataset} | {spec.backbone} | seed {spec.seed} ({what})"
            save_figure(reliability_figure(bins, title), path.with_suffix(""))
        pngs.append(path.read_bytes())
    return pngs[0], pngs[1]


def _first_seed(runs: list[Run]) -> dict[str, Run]:
    """Per configuration, the run of its lowest seed."""
    chosen: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r[1].seed):
        chosen.setdefault(run[1].config_id, run)
    return chosen


def build_section(
    store: Store,
    folder: Path,
    dataset: str,
    backbone: str,
    group: pd.DataFrame,
    runs: list[Run],
    temperatures: dict[str, float],
    mixing_samples: int,
    device: str,
) -> Section:
    """Draw (and save as PNG and PDF) every figure of one dataset and backbone."""
    section = Section(dataset, backbone)
    chosen = _first_seed(runs)
    for _, row in group.iterrows():
        run = chosen.get(row["config_id"])
        if run is None:
            continue
        name, spec, logits = run
        before, after = reliability_pngs(
            name, spec, logits, temperatures[spec.run_id], folder / "diagrams"
        )
        section.reliability.append((f"{row['method']} (seed {spec.seed})", before, after))
        if mixing_samples > 0:
            try:
                section.mixing[row["method"]] = mixing_diagnostic(
                    store.run_dir(spec), mixing_samples, device=device
                )
            except (CalibenchError, OSError, RuntimeError) as exc:
                section.notes.append(f"mixing diagnostic of {row['method']} skipped: {exc}")
    for name, spec, _ in sorted(runs, key=lambda r: (r[1].method, r[1].seed)):
        run_dir = store.run_dir(spec)
        try:
            log = read_log(run_dir)
        except CalibenchError as exc:
            section.notes.append(f"training curves of {name} skipped: {exc}")
            continue
        metrics = read_json(RunDir(run_dir) / RunDir.METRICS) or {}
        selected = metrics.get("best_epoch") or best_epoch(log)
        title = f"{spec.method} | {dataset} | {backbone} | seed {spec.seed}"
        figure = training_curves_figure(log, title, int(selected))
        section.curves.append((name, save_figure(figure, folder / "curves" / name)))
    if section.mixing:
        stem = folder / "mixing" / f"{dataset}_{backbone.replace('/', '-')}"
        section.mixing_png = save_figure(
            mixing_figure(section.mixing, f"{dataset} | {backbone}: mixed test images"), stem
        )
    return section


def mixing_csv(sections: list[Section]) -> str:
    """One row per method and dataset/backbone: agreement, pairs, unmixed confidence and the
    mean confidence at every l of the grid."""
    rows = []
    for s in sections:
        for method, r in s.mixing.items():
            row = {
                "dataset": s.dataset,
                "backbone": s.backbone,
                "method": method,
                "pairs": r.n_pairs,
                "comparisons": r.n_comparisons,
                "agreement": r.agreement,
                "raw_confidence": r.raw_confidence,
            }
            row.update(
                {f"conf_{lam:.2f}": c for lam, c in zip(r.lambdas, r.mean_confidence, strict=True)}
            )
            rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False)


def settings_html(store: Store, runs: list[Run]) -> str:
    """Each run's ``config.json`` exactly as stored, in a collapsed ``<details>``."""
    parts = []
    for _, spec, _ in sorted(runs, key=lambda r: (r[1].method, r[1].seed)):
        path = RunDir(store.run_dir(spec)) / RunDir.CONFIG
        try:
            text = path.read_text()
        except OSError:
            text = json.dumps(spec.to_dict(), indent=2, sort_keys=True)
        parts.append(
            f"<details><summary>{esc(spec.method)}, seed {spec.seed}, run {esc(spec.run_id)}"
            f" <span class=note>({esc(path)})</span></summary><pre>{esc(text)}</pre></details>"
        )
    return "".join(parts)


def section_html(
    section: Section,
    group: pd.DataFrame,
    marks: Marks,
    summary: pd.DataFrame,
    runs: list[Run],
    store: Store,
) -> str:
    """The HTML of one dataset and backbone."""
    out = [f'<h2 id="{esc(section.anchor)}">{esc(section.dataset)} / {esc(section.backbone)}</h2>']
    columns = [c for c in metric_columns(summary, ood=False) if group[c].notna().any()]
    out.append(
        "<p class=note>Mean ± std over seeds; accuracy and ECE-like metrics in percent; (TS) "
        "after temperature scaling fitted on the validation set. Bold: better than every other "
        "method beyond the seed noise; underlined: tied for best (docs/statistics.md). Click a "
        "header to sort.</p>"
    )
    out.append(summary_table(group, columns, marks))
    ood = [c for c in metric_columns(summary, ood=True) if group[c].notna().any()]
    if ood:
        out.append("<h3>Out-of-distribution detection (AUROC)</h3>")
        out.append(summary_table(group, ood, marks))
    out.append("<h3>Reliability diagrams</h3>")
    out.append(
        "<p class=note>Test set, equal-width bins as in the ECE column; lowest seed of each "
        "configuration. Bars: accuracy per confidence bin; hatched: gap to the bin's mean "
        "confidence; lower panel: fraction of samples per bin.</p>"
    )
    grid = ["<div class=grid><b>method</b><b>before temperature scaling</b><b>after</b>"]
    for method, before, after in section.reliability:
        grid.append(
            f"<div>{esc(method)}</div>"
            f"<figure>{image(before, f'{method} before TS')}</figure>"
            f"<figure>{image(after, f'{method} after TS')}</figure>"
        )
    out.append("".join(grid) + "</div>")
    if section.mixing_png is not None:
        out.append("<h3>Mixing diagnostic</h3>")
        out.append(
            "<p class=note>Mean confidence of x' = λ x<sub>i</sub> + (1-λ) x<sub>j</sub> over test"
            " pairs of different labels; order agreement: fraction of comparisons where the mix"
            " with the larger max(λ, 1-λ) has the higher confidence (docs/report.md).</p>"
        )
        out.append(f"<figure>{image(section.mixing_png, 'mixing diagnostic')}</figure>")
        out.append(mixing_table(section.mixing))
    if section.curves:
        out.append("<h3>Training curves</h3>")
        out.append(
            "<details open><summary>every run: loss terms, validation accuracy and ECE per epoch;"
            " dashed: the selected (best-validation) epoch</summary><div class=curves>"
            + "".join(f"<figure>{image(png, name)}</figure>" for name, png in section.curves)
            + "</div></details>"
        )
    out.extend(f"<p class=note>{esc(n)}</p>" for n in section.notes)
    out.append("<h3>Settings of every run</h3>")
    out.append(settings_html(store, runs))
    return "\n".join(out)


def write_html_report(
    store: Store,
    folder: Path,
    summary: pd.DataFrame,
    table: pd.DataFrame,
    runs: list[Run],
    marks: Marks | None = None,
    comparison: pd.DataFrame | None = None,
    mixing_samples: int = MAX_SAMPLES,
    device: str = "auto",
) -> Path:
    """Write ``folder/index.html`` (and the curves and mixing figures as PNG and PDF under
    ``folder``, and ``mixing.csv``) from what :func:`calibench.report.build.build_report` computed:
    the summary, the per-run table and the runs' specs and logits. ``marks`` defaults to the
    numerically best mean per column (:func:`calibench.report.table.best_marks`); ``comparison`` is
    :func:`calibench.report.published.compare_published`'s table, shown when given;
    ``mixing_samples`` caps the test images of the mixing diagnostic (0 turns it off)."""
    marks = best_marks(summary) if marks is None else marks
    temperatures = dict(zip(table["run_id"], table["temperature"], strict=True))
    sections, bodies = [], []
    for (dataset, backbone), group in summary.groupby(GROUP, sort=True):
        members = [r for r in runs if (r[1].dataset, r[1].backbone) == (dataset, backbone)]
        section = build_section(
            store, folder, dataset, backbone, group, members, temperatures, mixing_samples, device
        )
        sections.append(section)
        bodies.append(section_html(section, group, marks, summary, members, store))
    if any(s.mixing for s in sections):
        write_text(folder / "mixing.csv", mixing_csv(sections))
    nav = "".join(
        f'<a href="#{esc(s.anchor)}">{esc(s.dataset)} / {esc(s.backbone)}</a>' for s in sections
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>calibench report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>calibench report</h1>",
        f"<p class=note>{len(runs)} complete runs in {esc(store.root.resolve())}; generated "
        f"{esc(time.strftime('%Y-%m-%d %H:%M'))}. Every number is recomputed from the stored "
        "logits.</p>",
        f"<nav>{nav}</nav>",
    ]
    if comparison is not None:
        parts.append('<h2 id="published">Published numbers</h2>')
        if comparison.empty:
            parts.append(
                "<p>No measured dataset and method has published numbers "
                "(calibench/report/published.csv).</p>"
            )
        else:
            parts.append(
                "<p class=note>Percent for accuracy, error and ECE-like metrics; difference = "
                "measured - published; verified = read from the primary source.</p>"
            )
            parts.append(comparison_table(comparison))
    parts.extend(bodies)
    parts.append("<h2 id=runs>Every run</h2>")
    parts.append(per_run_table(table))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    path = folder / "index.html"
    write_text(path, "\n".join(parts) + "\n")
    return path
