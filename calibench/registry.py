"""Name -> object registries for methods, backbones, datasets and post-hoc calibrators.

Modelled on timm's ``register_model`` / ``create_model`` / ``list_models``: a registry is a
dictionary with a decorator in front and a lookup that fails with the list of valid names.
This module is a leaf: it imports none of the things it registers. Each registry fills itself
on its first lookup by importing the module named in ``fill`` (see :mod:`calibench.plugins`),
so ``calibench.get_method("focal")`` works without any set-up call.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Generic, TypeVar

from calibench.errors import CalibenchError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"[a-z0-9_]+")
"""Registered names: they become folder names under the results folder and words of the
command line, so lowercase letters, digits and underscores only (no ``/``, ``..`` or spaces).
timm backbones are not registered: ``timm/<name>`` is read by its prefix."""


class Registry(Generic[T]):
    """A named collection of one kind of thing (``method``, ``backbone``, ``dataset``...).

    ``fill`` is ``"module"`` or ``"module:function"``: imported (and called) once, on the first
    lookup, to register the built-in entries."""

    def __init__(self, kind: str, fill: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._fill = fill
        self._filled = fill is None

    def _ensure_filled(self) -> None:
        if self._filled:
            return
        self._filled = True
        module, _, function = str(self._fill).partition(":")
        loaded = importlib.import_module(module)
        if function:
            getattr(loaded, function)()

    def check_name(self, name: object) -> None:
        """Raise a :class:`CalibenchError` unless ``name`` matches :data:`NAME_PATTERN`."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise CalibenchError(
                f"cannot register the {self.kind} name {name!r}: names may hold only lowercase "
                "letters, digits and underscores ([a-z0-9_]+, e.g. 'my_method'), because they "
                "become folder names under the results folder."
            )

    def add(self, name: str, obj: T, source: str | None = None) -> T:
        """Register ``obj`` under ``name`` (checked by :meth:`check_name`); a second, different
        source for a name is an error."""
        self.check_name(name)
        source = source or _source_of(obj)
        if name in self._entries and self._sources[name] != source:
            raise CalibenchError(
                f"{self.kind} {name!r} is registered twice: by {self._sources[name]} and by "
                f"{source}. Rename one of them."
            )
        self._entries[name] = obj
        self._sources[name] = source
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; an unusable ``name`` fails at once."""
        self.check_name(name)

        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``, or an error that lists the valid names."""
        self._ensure_filled()
        try:
            return self._entries[name]
        except KeyError:
            raise CalibenchError(
                f"unknown {self.kind} {name!r}. Valid {self.kind}s: {', '.join(self.names())}."
            ) from None

    def source(self, name: str) -> str:
        self._ensure_filled()
        return self._sources[name]

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style pattern."""
        self._ensure_filled()
        names = sorted(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        self._ensure_filled()
        return name in self._entries

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._sources.pop(name, None)


def _source_of(obj: object) -> str:
    try:  # the stubs admit only modules, classes and code objects; at run time any other
        # object raises the TypeError handled below
        return f"{inspect.getsourcefile(obj)}"  # type: ignore[arg-type]
    except TypeError:
        return repr(obj)


METHODS: Registry = Registry("method", fill="calibench.plugins:load_builtin_methods")
BACKBONES: Registry = Registry("backbone", fill="calibench.models")
DATASETS: Registry = Registry("dataset", fill="calibench.data")
CALIBRATORS: Registry = Registry("calibrator", fill="calibench.evaluation.calibrators")
