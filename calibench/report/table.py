"""The one table model of the report and its four renderings: markdown, LaTeX, HTML and the
terminal.

A :class:`Table` holds columns and rows of :class:`Cell` s: a value (a mean, a count or a text),
its standard deviation over seeds, an interval, a mark ("best" or "tied", decided by
:mod:`calibench.report.marks`) and a flag (a note such as "T on an edge of the grid"); a row may
carry a warning (e.g. why a calibrator fit is unsound). The renderers only draw what the model
holds, so every format shows the same numbers, marks, flags and warnings, and each escapes text
for its own syntax (names are user input: a method may be called ``$x$`` or ``<b>``).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table as RichTable
from rich.text import Text

from calibench.evaluation.metrics import METRIC_INFO

EXTRA_LABELS = {"temperature": "T"}
MAX_PART_COLUMNS = 4
"""At most this many value columns per LaTeX tabular (four "mean ± std" cells and a method name
fit a one-column article's text width); wider tables are split into parts."""
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass(frozen=True)
class Column:
    """A column: ``decimals`` None for text, else numbers shown times ``scale`` with that many
    decimals (``signed`` adds a + to positive values); ``group`` splits wide tables into parts
    (e.g. before and after temperature scaling)."""

    key: str
    label: str
    decimals: int | None = None
    scale: float = 1.0
    signed: bool = False
    description: str = ""
    group: str = ""
    right: bool | None = None

    @property
    def numeric(self) -> bool:
        return self.decimals is not None

    @property
    def align_right(self) -> bool:
        """Numbers align right, texts left, unless ``right`` says otherwise (counts)."""
        return self.numeric if self.right is None else self.right


@dataclass(frozen=True)
class Cell:
    """One cell: a value with its std over seeds and interval (both optional), a mark ("best",
    "tied" or "") and a flag (the text of a note, or "")."""

    value: Any = None
    std: float | None = None
    interval: tuple[float, float] | None = None
    mark: str = ""
    flag: str = ""


@dataclass
class Row:
    """A row of cells (one per column) and a warning ("" when none)."""

    cells: list[Cell]
    warning: str = ""


@dataclass
class Table:
    """A titled table; ``notes`` are sentences shown with the title (legend, units) and ``key``
    names it (HTML anchor, LaTeX label)."""

    title: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key: str = ""

    def flags(self) -> list[str]:
        """The distinct flags of the cells, in order of first appearance (note i + 1)."""
        return list(dict.fromkeys(c.flag for r in self.rows for c in r.cells if c.flag))

    @property
    def has_warnings(self) -> bool:
        return any(r.warning for r in self.rows)

    def select(self, keys: list[str]) -> Table:
        """The same table restricted to the columns ``keys``, in that order."""
        index = [next(i for i, c in enumerate(self.columns) if c.key == k) for k in keys]
        rows = [Row([r.cells[i] for i in index], r.warning) for r in self.rows]
        return replace(self, columns=[self.columns[i] for i in index], rows=rows)


def label(column: str) -> str:
    """A readable header from the metric table: ``ece_ts`` -> ``ECE (TS)``; a name the table
    does not know stays as it is."""
    base = column.removesuffix("_ts")
    info = METRIC_INFO.get(base)
    text = info.label if info else EXTRA_LABELS.get(base, base)
    return f"{text} (TS)" if column.endswith("_ts") and base != column else text


def is_percent(column: str) -> bool:
    """Whether a metric column is shown in percent (its unit in the metric table)."""
    info = METRIC_INFO.get(column.removesuffix("_ts"))
    return info is not None and info.unit == "percent"


def metric_column(key: str, group: str = "") -> Column:
    """The column of a metric (``ece``, ``ece_ts``, ``temperature``, ``ood_*``): its label,
    unit and description from the metric table; percent with 2 decimals, else 3."""
    info = METRIC_INFO.get(key.removesuffix("_ts"))
    description = info.description if info else ""
    if key.endswith("_ts") and description:
        description += ", after temperature scaling"
    if is_percent(key):
        return Column(key, label(key), 2, 100.0, description=description + " (%)", group=group)
    return Column(key, label(key), 3, description=description, group=group)


def text_column(key: str, label_text: str | None = None, right: bool = False) -> Column:
    """A column of texts, or of integers (``right``: aligned right)."""
    return Column(key, key if label_text is None else label_text, right=right)


def missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def number(value: Any, column: Column, signed: bool | None = None) -> str:
    """``value`` as ``column`` shows it ("-" when missing)."""
    if missing(value):
        return "-"
    if not column.numeric:
        return str(value)
    sign = "+" if (column.signed if signed is None else signed) else ""
    return f"{float(value) * column.scale:{sign}.{column.decimals}f}"


def plain_text(cell: Cell, column: Column) -> str:
    """The cell's text without marks: value, `` ± std`` and `` [low, high]`` when present."""
    text = number(cell.value, column)
    if missing(cell.value) or not column.numeric:
        return text
    if not missing(cell.std):
        text += f" ± {number(cell.std, column, signed=False)}"
    if cell.interval is not None and not missing(cell.interval[0]):
        low, high = (number(v, column, signed=False) for v in cell.interval)
        text += f" [{low}, {high}]"
    return text


def superscript(number: int) -> str:
    """``number`` in Unicode superscript digits (the mark of note ``number``)."""
    return str(number).translate(SUPERSCRIPT)


def _flag_number(table: Table, cell: Cell) -> int | None:
    return table.flags().index(cell.flag) + 1 if cell.flag else None


# markdown ---------------------------------------------------------------------------------

_MD_SPECIALS = re.compile(r"([\\`*|$])")
_MD_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def escape_md(text: str) -> str:
    """``text`` safe in a markdown table cell: HTML's ``& < >`` as entities, and ``\\ ` * | $``
    and word-edge underscores backslash-escaped (an underscore inside a word is plain text)."""
    text = html.escape(str(text), quote=False)
    return _MD_EDGE_UNDERSCORE.sub(r"\\_", _MD_SPECIALS.sub(r"\\\1", text))


def _md_cell(table: Table, cell: Cell, column: Column) -> str:
    body = escape_md(plain_text(cell, column))
    if cell.mark == "best":
        body = f"**{body}**"
    elif cell.mark == "tied":
        body += " ≈"
    note = _flag_number(table, cell)
    return body + (superscript(note) if note else "")


def markdown(table: Table, heading: str = "###") -> str:
    """The table as a markdown section: heading, notes, the grid (with a warning column when a
    row has one) and the numbered flags."""
    header = [escape_md(c.label) for c in table.columns]
    warn = table.has_warnings
    lines = [f"{heading} {escape_md(table.title)}", ""] if heading else []
    lines += [" ".join(table.notes), ""] if table.notes else []
    lines.append("| " + " | ".join([*header, *(["warning"] if warn else [])]) + " |")
    lines.append("|" + "---|" * (len(header) + warn))
    for row in table.rows:
        cells = [_md_cell(table, c, col) for c, col in zip(row.cells, table.columns, strict=True)]
        if warn:
            cells.append(escape_md(row.warning))
        lines.append("| " + " | ".join(cells) + " |")
    for i, flag in enumerate(table.flags(), 1):
        lines += ["", f"{superscript(i)} {escape_md(flag)}"]
    return "\n".join(lines) + "\n"


# LaTeX ------------------------------------------------------------------------------------

TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "≈": r"$\approx$",
    "λ": r"$\lambda$",
}


def escape_tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (text mode)."""
    return re.sub(r"[\\&%$#_{}~^<>|±≈λ]", lambda m: TEX_SPECIALS[m.group()], str(text))


def _tex_cell(notes: list[str], cell: Cell, column: Column, extra_flag: str = "") -> str:
    flags = [f for f in (cell.flag, extra_flag) if f]
    sup = ",".join(str(notes.index(f) + 1) for f in flags)
    if not column.numeric or missing(cell.value):
        body = escape_tex(plain_text(cell, column))
        return body + (f"\\textsuperscript{{{sup}}}" if sup else "")
    body = plain_text(cell, column).replace(" ± ", r" \pm ").replace("[", r"\,[")
    if cell.mark == "best":
        body = rf"\mathbf{{{body}}}"
    elif cell.mark == "tied":
        body = rf"\underline{{{body}}}"
    return f"${body}{f'^{{{sup}}}' if sup else ''}$"


def parts(table: Table, max_columns: int = MAX_PART_COLUMNS) -> list[Table]:
    """The table split for narrow pages: the leading text columns repeated in every part; the
    value columns of each group (e.g. before and after temperature scaling) cut into the fewest
    parts of at most ``max_columns``, of sizes as even as possible."""
    lead = [c.key for c in table.columns if not c.numeric]
    groups: dict[str, list[str]] = {}
    for column in (c for c in table.columns if c.numeric):
        groups.setdefault(column.group, []).append(column.key)
    chunks = []
    for keys in groups.values():
        count = -(-len(keys) // max_columns)
        chunks += [list(chunk) for chunk in np.array_split(keys, count)]
    return [table.select(lead + chunk) for chunk in chunks] or [table]


def _tabular(part: Table, notes: list[str]) -> list[str]:
    spec = "".join("r" if c.align_right else "l" for c in part.columns)
    head = " & ".join(escape_tex(c.label) for c in part.columns) + r" \\"
    body = []
    for row in part.rows:
        cells = [
            _tex_cell(notes, cell, column, row.warning if i == 0 else "")
            for i, (cell, column) in enumerate(zip(row.cells, part.columns, strict=True))
        ]
        body.append(" & ".join(cells) + r" \\")
    return [
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}",
    ]


def latex(table: Table) -> str:
    """The table as one ``table`` float (label ``tab:<key>``): its parts (see :func:`parts`)
    stacked, each scaled down to the text width only when wider; the caption holds the title
    and notes, the numbered flags and warnings follow. Needs booktabs and graphicx."""
    notes = list(dict.fromkeys([*table.flags(), *(r.warning for r in table.rows if r.warning)]))
    out = [
        r"\begin{table}[tbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{escape_tex(' '.join([table.title + '.', *table.notes]))}}}",
        rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', table.key or table.title)}}}",
    ]
    for i, part in enumerate(parts(table)):
        out += ([r"\par\medskip"] if i else []) + _tabular(part, notes)
    if notes:
        listed = r"\\ ".join(
            f"\\textsuperscript{{{i}}}{escape_tex(n)}" for i, n in enumerate(notes, 1)
        )
        out.append(rf"\par\smallskip{{\footnotesize\raggedright {listed}\par}}")
    out.append(r"\end{table}")
    return "\n".join(out)


# HTML -------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, for attributes)."""
    return html.escape(str(value), quote=True)


def _html_cell(table: Table, cell: Cell, column: Column) -> str:
    sort = "" if missing(cell.value) else f' data-sort="{esc(cell.value)}"'
    classes = " ".join(c for c in (cell.mark, "" if column.align_right else "text") if c)
    css = f' class="{classes}"' if classes else ""
    note = _flag_number(table, cell)
    sup = f'<sup class="flag" title="{esc(cell.flag)}">{note}</sup>' if note else ""
    return f"<td{css}{sort}>{esc(plain_text(cell, column))}{sup}</td>"


def to_html(table: Table) -> str:
    """The table as a sortable HTML table (headers carry the metric's description as a
    tooltip), a warning column when a row has one, and the numbered flags beneath."""
    warn = table.has_warnings
    head = "".join(
        f'<th title="{esc(c.description)}">{esc(c.label)}</th>' if c.description
        else f"<th>{esc(c.label)}</th>"
        for c in table.columns
    ) + ("<th>warning</th>" if warn else "")  # fmt: skip
    rows = []
    for row in table.rows:
        cells = "".join(
            _html_cell(table, c, col) for c, col in zip(row.cells, table.columns, strict=True)
        )
        if warn:
            cells += f'<td class="warning">{esc(row.warning)}</td>'
        rows.append(f"<tr>{cells}</tr>")
    anchor = f' id="{esc(table.key)}"' if table.key else ""
    notes = "".join(f"<p class=note>{esc(n)}</p>" for n in table.notes)
    flags = "".join(
        f"<p class=note><sup>{i}</sup> {esc(f)}</p>" for i, f in enumerate(table.flags(), 1)
    )
    return (
        f'<div class="table"{anchor}><h4>{esc(table.title)}</h4>{notes}<div class="scroll">'
        f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        f"</table></div>{flags}</div>"
    )


# terminal ---------------------------------------------------------------------------------


def _terminal_cell(table: Table, cell: Cell, column: Column) -> Text:
    text = Text(plain_text(cell, column), style="bold" if cell.mark == "best" else "")
    if cell.mark == "tied":
        text.append(" ≈")
    note = _flag_number(table, cell)
    if note:
        text.append(superscript(note))
    return text


def _terminal_table(table: Table, title: str, fits: bool) -> RichTable:
    flags = table.flags()
    out = RichTable(
        title=Text(title),
        title_justify="left",
        caption=Text("  ".join(f"{superscript(i)} {f}" for i, f in enumerate(flags, 1))),
        caption_justify="left",
    )
    cells = [
        [_terminal_cell(table, c, col) for c, col in zip(r.cells, table.columns, strict=True)]
        for r in table.rows
    ]
    for i, column in enumerate(table.columns):
        width = max([len(column.label), *(len(row[i]) for row in cells)])
        out.add_column(
            Text(column.label),
            justify="right" if column.align_right else "left",
            no_wrap=fits,
            overflow="fold",
            min_width=width if fits else None,
        )
    if table.has_warnings:
        out.add_column("warning", overflow="fold")
    for row, texts in zip(table.rows, cells, strict=True):
        out.add_row(*texts, *([Text(row.warning)] if table.has_warnings else []))
    return out


def natural_width(table: Table) -> int:
    """Characters the terminal needs to show ``table`` without cutting a value (rich's
    borders and padding: 3 per column plus 1)."""
    widths = [
        max([len(c.label), *(len(_terminal_cell(table, r.cells[i], c)) for r in table.rows)])
        for i, c in enumerate(table.columns)
    ]
    return sum(widths) + 3 * len(widths) + 1


def terminal(table: Table, width: int) -> list[RichTable]:
    """The table as rich tables for a terminal ``width`` characters wide: split into as few
    parts as needed (text columns repeated) so that no number is cut; a part that cannot fit
    (one value column on a very narrow terminal) wraps its cells instead. The first part's
    title carries the notes."""
    lead = [c.key for c in table.columns if not c.numeric]
    chunks: list[list[str]] = []
    for key in (c.key for c in table.columns if c.numeric):
        if chunks and natural_width(table.select(lead + chunks[-1] + [key])) <= width:
            chunks[-1].append(key)
        else:
            chunks.append([key])
    out = []
    for i, chunk in enumerate(chunks or [[]]):
        part = table.select(lead + chunk)
        title = " ".join([table.title, *table.notes]) if i == 0 else f"{table.title} (continued)"
        out.append(_terminal_table(part, title, natural_width(part) <= width))
    return out
