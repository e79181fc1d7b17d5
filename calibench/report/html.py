"""``report/index.html``: the one page to open. This module only assembles what
:mod:`calibench.report.build` computed and drew into a page; it reads no file and runs no model.

The page is self-contained: every image is a base64 PNG ``data:`` URI, the style and the few
lines of script (sortable tables) are inline, nothing is fetched from a network and the only
links are anchors within the page, so the file can be mailed or opened from disk. What each
section shows: docs/report.md, "The HTML page".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from calibench.report.table import Table, esc, to_html

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1, h2, h3, h4 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h4 { margin: 1em 0 .2em; }
table { border-collapse: collapse; margin: .3em 0 .6em; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .6em; border-bottom: 1px solid #e4e4e4; text-align: right;
         white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
table.sortable th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
table.sortable th:hover { background: #e6e6e6; }
td.best { font-weight: bold; background: #e8f4e8; }
td.tied { text-decoration: underline; }
td.warning { color: #8a3b00; text-align: left; white-space: normal; min-width: 20em; }
sup.flag { color: #8a3b00; cursor: help; }
.scroll { overflow: auto; max-height: 42em; }
.grid { display: grid; gap: .6em 1em; align-items: start; }
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
class Figure:
    """A drawn figure: its caption and PNG bytes."""

    caption: str
    png: bytes


@dataclass
class Part:
    """A section of the page (``<h2>``, or ``<h3>`` inside another): an introduction, tables,
    a grid of figures (``columns`` per row, 0: as many as fit), collapsed blocks of
    preformatted text (summary, text), notes (e.g. what was skipped and why) and sub-sections.
    A section with nothing but its introduction is left out."""

    key: str
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    columns: int = 0
    details: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    children: list[Part] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        content = self.tables or self.figures or self.details or self.notes
        return not content and all(child.empty for child in self.children)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_grid(figures: list[Figure], columns: int) -> str:
    """Figures with their captions in a grid of ``columns`` per row (0: as many as fit)."""
    template = (
        f"repeat({columns}, minmax(0, 1fr))"
        if columns
        else "repeat(auto-fill, minmax(min(100%, 520px), 1fr))"
    )
    cells = "".join(
        f'<figure><img src="{data_uri(f.png)}" alt="{esc(f.caption)}">'
        f"<figcaption>{esc(f.caption)}</figcaption></figure>"
        for f in figures
    )
    return f'<div class="grid" style="grid-template-columns: {template}">{cells}</div>'


def part_html(part: Part, level: int = 2) -> str:
    """The HTML of one section and its sub-sections."""
    out = [f'<h{level} id="{esc(part.key)}">{esc(part.title)}</h{level}>']
    out += [f"<p class=note>{esc(t)}</p>" for t in part.intro]
    out += [to_html(t) for t in part.tables]
    if part.figures:
        out.append(figure_grid(part.figures, part.columns))
    out += [
        f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"
        for summary, text in part.details
    ]
    out += [f"<p class=note>{esc(n)}</p>" for n in part.notes]
    out += [part_html(c, min(level + 1, 4)) for c in part.children if not c.empty]
    return "\n".join(out)


def page(parts: list[Part], subtitle: str) -> str:
    """The whole page: a title, ``subtitle``, a navigation bar of the non-empty sections, the
    sections, and the sorting script."""
    shown = [p for p in parts if not p.empty]
    nav = "".join(f'<a href="#{esc(p.key)}">{esc(p.title)}</a>' for p in shown)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>calibench report</title>",
            f"<style>{STYLE}</style></head><body>",
            "<h1>calibench report</h1>",
            f"<p class=note>{esc(subtitle)}</p>",
            f"<nav>{nav}</nav>",
            *(part_html(p) for p in shown),
            f"<script>{SCRIPT}</script></body></html>",
        ]
    )
