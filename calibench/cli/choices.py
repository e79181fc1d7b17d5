"""Option values that argparse reads only when it needs them."""

from __future__ import annotations

import importlib
from collections.abc import Iterator


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
