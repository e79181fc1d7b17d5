"""The one table model (calibench/report/table.py): the same marks, flags and warnings in
markdown, LaTeX, HTML and the terminal; names escaped for each format; no number cut."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from calibench.report import marks as marks_module
from calibench.report.summary import EDGE_FLAG, glossary_table, summary_tables
from calibench.report.table import (
    Cell,
    Row,
    Table,
    escape_md,
    escape_tex,
    latex,
    markdown,
    metric_column,
    natural_width,
    parts,
    terminal,
    text_column,
    to_html,
)

HOSTILE = "x$\\alpha$ <b>b</b> & |p| *s* _u_ 50%"


def sample_table() -> Table:
    """Two configurations, ECE (percent) and NLL (plain), a mark of each kind, a flag and a
    row warning."""
    columns = [text_column("method"), metric_column("ece"), metric_column("nll")]
    rows = [
        Row([Cell("ce"), Cell(0.0435, 0.002, mark="best"), Cell(1.25, 0.1, flag="T at edge")]),
        Row([Cell(HOSTILE), Cell(0.05, None, mark="tied"), Cell(np.nan)], warning="separable"),
    ]
    return Table("digits / small_cnn", columns, rows, ["units"], key="digits-small_cnn")


def test_cell_text_units_marks_and_flags_in_markdown():
    text = markdown(sample_table())
    assert "| ce | **4.35 ± 0.20** | 1.250 ± 0.100¹ |  |" in text
    assert "| 5.00 ≈ | - | separable |" in text
    assert "¹ T at edge" in text
    assert "| method | ECE | NLL | warning |" in text


def test_markdown_escapes_html_pipes_dollars_and_emphasis():
    assert escape_md(HOSTILE) == (
        "x\\$\\\\alpha\\$ &lt;b&gt;b&lt;/b&gt; &amp; \\|p\\| \\*s\\* \\_u\\_ 50%"
    )
    assert escape_md("rankmixup_mrl [5c5a48]") == "rankmixup_mrl [5c5a48]"
    row = markdown(sample_table()).splitlines()[-4]
    assert "<b>" not in row and row.count(" | ") == 3


def test_latex_escapes_marks_flags_and_warnings():
    tex = latex(sample_table())
    assert escape_tex(HOSTILE) in tex
    assert r"x\$\textbackslash{}alpha\$ \textless{}b\textgreater{}" in escape_tex(HOSTILE)
    assert r"$\mathbf{4.35 \pm 0.20}$" in tex and r"$\underline{5.00}$" in tex
    assert r"$1.250 \pm 0.100^{1}$" in tex
    assert r"\textsuperscript{2}" in tex and "separable" in tex
    assert r"\label{tab:digits-small-cnn}" in tex
    assert tex.count(r"\begin{tabular}") == 1


def test_latex_parts_split_groups_evenly_and_repeat_the_names():
    columns = [text_column("method")] + [
        metric_column(f"m{i}", "a" if i < 6 else "b") for i in range(13)
    ]
    table = Table("t", columns, [Row([Cell("ce"), *[Cell(0.1 * i) for i in range(13)]])])
    split = parts(table)
    assert [len(p.columns) - 1 for p in split] == [3, 3, 4, 3]
    assert all(p.columns[0].key == "method" for p in split)
    assert latex(table).count(r"\begin{tabular}") == 4


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[dict, str]] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._open, self._text = dict(attrs), ""

    def handle_data(self, data):
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append((self._open, self._text))
            self._open = None


def test_html_marks_flags_warnings_and_escapes():
    page = to_html(sample_table())
    assert "<b>" not in page and "&lt;b&gt;" in page
    parser = Cells()
    parser.feed(page)
    cells = parser.cells
    assert cells[1] == ({"class": "best", "data-sort": "0.0435"}, "4.35 ± 0.20")
    assert cells[2] == ({"data-sort": "1.25"}, "1.250 ± 0.1001")
    assert cells[5][0]["class"] == "tied"
    assert cells[6] == ({}, "-")
    assert cells[7] == ({"class": "warning"}, "separable")
    assert cells[4][1] == HOSTILE
    assert '<sup class="flag" title="T at edge">1</sup>' in page


def test_terminal_splits_instead_of_cutting_numbers():
    columns = [text_column("method")] + [metric_column(m) for m in ("acc", "ece", "nll", "brier")]
    row = [Cell("rankmixup_mndcg"), Cell(0.7639, 0.0112, mark="tied")]
    row += [Cell(0.05, 0.01), Cell(1.23456, 0.5), Cell(0.2, 0.1, flag="f")]
    table = Table("digits / small_cnn", columns, [Row(row, "a warning")])
    for width in (60, 80, 200):
        console = Console(file=io.StringIO(), width=width, color_system=None)
        printed = terminal(table, width)
        for part in printed:
            console.print(part)
        out = console.file.getvalue()
        assert "…" not in out
        for text in ("76.39 ± 1.12 ≈", "5.00 ± 1.00", "1.235 ± 0.500", "0.200 ± 0.100¹"):
            assert text in out, (width, out)
        assert (len(printed) == 1) == (width == 200)
    assert natural_width(table) > 60


def test_terminal_text_is_not_markup():
    table = Table("t [bold]x[/bold]", [text_column("method")], [Row([Cell("ce [abc123]")])])
    console = Console(file=io.StringIO(), width=100)
    for part in terminal(table, 100):
        console.print(part)
    assert "ce [abc123]" in console.file.getvalue()
    assert "[bold]x[/bold]" in console.file.getvalue()


def test_summary_tables_carry_marks_edge_flags_and_the_legend():
    summary = pd.DataFrame(
        {
            "dataset": ["cifar10", "cifar10"],
            "backbone": ["resnet50", "resnet50"],
            "method": ["ce", "focal"],
            "config_id": ["a", "b"],
            "epochs": [200, 200],
            "seeds": [3, 3],
            "ece": [0.04, 0.02],
            "ece_std": [0.01, 0.001],
            "temperature": [0.1, 1.2],
            "temperature_std": [0.0, 0.1],
        }
    )
    runs = pd.DataFrame({"config_id": ["a", "a", "b"], "temperature_at_edge": [True, False, False],
                         "dataset": "cifar10", "backbone": "resnet50"})  # fmt: skip
    marks = {"ece": pd.Series(["", "best"]), "temperature": pd.Series(["", ""])}
    (table,) = summary_tables(summary, marks, runs, "md")
    keys = [c.key for c in table.columns]
    ece, t = keys.index("ece"), keys.index("temperature")
    assert table.rows[1].cells[ece].mark == "best"
    assert table.rows[0].cells[t].flag == EDGE_FLAG and not table.rows[1].cells[t].flag
    assert marks_module.legend("md") in table.notes
    assert "**bold**" in marks_module.legend("md") and "underlined" in marks_module.legend("tex")


def test_glossary_holds_every_metric_of_the_metric_table_with_its_source():
    from calibench.evaluation.metrics import METRIC_TABLE

    glossary = glossary_table()
    names = [r.cells[1].value for r in glossary.rows]
    assert [m.name for m in METRIC_TABLE] == names[: len(METRIC_TABLE)]
    for metric, row in zip(METRIC_TABLE, glossary.rows, strict=False):
        assert row.cells[2].value == metric.description
        assert row.cells[6].value == (metric.source or "-")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_hostile_latex_compiles_without_overfull_boxes(tmp_path):
    columns = [text_column("method")] + [metric_column(m) for m in ("acc", "ece", "adaece", "nll")]
    cells = [Cell(HOSTILE + " " + "long_method_name" * 3)]
    cells += [Cell(0.97, 0.01, mark="best", flag=HOSTILE)] + [Cell(0.1234, 0.0123)] * 3
    table = Table(HOSTILE, columns, [Row(cells, warning=HOSTILE)], [HOSTILE])
    (tmp_path / "t.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}"
        f"\\begin{{document}}{latex(table)}\\end{{document}}"
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert run.returncode == 0, log[-2000:]
    assert not re.search(r"Overfull \\hbox", log), log


def test_per_run_table_flags_a_temperature_on_the_grid_edge_and_shows_intervals():
    from calibench.report.summary import EDGE_RUN_FLAG, per_run_table

    runs = pd.DataFrame(
        {"method": "ce", "dataset": "digits", "backbone": "small_cnn", "seed": [0, 1],
         "epochs": 2, "run_id": ["r0", "r1"], "config_id": "a", "ece": [0.05, 0.06],
         "ece_low": [0.04, np.nan], "ece_high": [0.07, np.nan], "temperature": [0.1, 1.3],
         "temperature_at_edge": [True, False]}
    )  # fmt: skip
    table = per_run_table(runs)
    keys = [c.key for c in table.columns]
    assert keys == [
        "method",
        "dataset",
        "backbone",
        "seed",
        "epochs",
        "run_id",
        "ece",
        "temperature",
    ]
    first, second = table.rows
    assert first.cells[-1].flag == EDGE_RUN_FLAG and not second.cells[-1].flag
    assert "| 5.00 [4.00, 7.00] | 0.100¹ |" in markdown(table)
    assert "| 6.00 | 1.300 |" in markdown(table)
