"""The command line's argument types (calibench/cli/choices.py) and the bounds they enforce."""

from __future__ import annotations

import argparse

import pytest

from calibench.cli.choices import comma_ints, comma_names, count
from calibench.cli.commands import main
from calibench.settings import Ge, Interval
from calibench.spec import MAX_BINS


def test_comma_lists():
    assert comma_names(" ce, focal ,") == ["ce", "focal"]
    assert comma_ints("0,1, 2") == [0, 1, 2]
    for bad, parse in ((",", comma_names), ("0,x", comma_ints)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_count_enforces_its_rule():
    bins = count(Interval(1, MAX_BINS))
    assert bins("15") == 15 and count(Ge(0))("0") == 0
    for bad in ("0", str(MAX_BINS + 1), "1e12", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"in \[1, 1000\]"):
            bins(bad)


def test_metrics_bounds_the_bins_as_run_does(tmp_path, capsys):
    """`metrics --n-bins 1000000000000` was a MemoryError traceback; now the rule of run's
    training.n_bins, exit 2."""
    logits = tmp_path / "logits.npz"
    with pytest.raises(SystemExit) as stop:
        main(["metrics", "--n-bins", "1000000000000", str(logits)])
    assert stop.value.code == 2
    assert "expected an integer in [1, 1000]" in capsys.readouterr().err
