"""calibench/report/build.py: the terminal summary and markdown tables show run ids as text."""

from __future__ import annotations

import io


def test_run_ids_in_summaries_are_not_swallowed_as_markup():
    from rich.console import Console

    from calibench.report.table import Cell, Row, Table, markdown, terminal, text_column

    table = Table("digits / small_cnn", [text_column("method")], [Row([Cell("ce [abc123]")])])
    console = Console(file=io.StringIO(), width=200)
    for part in terminal(table, 200):
        console.print(part)
    assert "ce [abc123]" in console.file.getvalue()
    assert "| ce [abc123] |" in markdown(table)
    piped = Table("t", [text_column("x")], [Row([Cell("a | b")])])
    assert "| a \\| b |" in markdown(piped)
