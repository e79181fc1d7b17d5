"""calibench/report/build.py: the terminal summary and markdown tables show run ids as text."""

from __future__ import annotations

import io


def test_run_ids_in_summaries_are_not_swallowed_as_markup():
    from rich.console import Console

    from calibench.report.build import markdown_table, print_summary

    header = ["dataset", "backbone", "method", "epochs", "seeds", "acc"]
    table_rows = [["digits", "small_cnn", "ce [abc123]", "1", "1", "90.00"]]
    console = Console(file=io.StringIO(), width=200)
    print_summary(header, table_rows, console)
    assert "ce [abc123]" in console.file.getvalue()
    assert "| ce [abc123] |" in markdown_table(header, table_rows)
    assert "| a \\| b |" in markdown_table(["x"], [["a | b"]])
