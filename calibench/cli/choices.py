"""The types and choices of the command's options: comma-separated lists, counts with a rule,
and choices argparse reads only when it needs them."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator

from calibench.settings import Constraint


class LazyChoices:
    """The valid values of an option, read from ``module.attribute`` when argparse first checks
    a value or lists them in an error, so that building the parser imports nothing heavy
    (calibench.shift needs torch; ``calibench --help`` must not)."""

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    def values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.attribute))

    def __contains__(self, value: object) -> bool:
        return value in self.values()

    def __iter__(self) -> Iterator[str]:
        return iter(self.values())


def comma_names(text: str) -> list[str]:
    """An argparse type: a comma-separated list of names (at least one)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def comma_ints(text: str) -> list[int]:
    """An argparse type: comma-separated integers (seeds)."""
    try:
        return [int(t) for t in comma_names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def count(rule: Constraint) -> Callable[[str], int]:
    """An argparse type: an integer that obeys ``rule``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not rule.holds(value):
            raise argparse.ArgumentTypeError(f"expected an integer {rule.rule()}, got {text!r}")
        return value

    return parse
