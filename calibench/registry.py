"""Name -> object registries for methods, backbones and datasets, and plugin discovery.

Modelled on timm's ``register_model`` / ``create_model`` / ``list_models``: a registry is a
dictionary with a decorator in front and a lookup that fails with the list of valid names.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from calibench.errors import CalibenchError

T = TypeVar("T")

ENTRY_POINT_GROUP = "calibench.methods"
BUILTIN_METHODS_DIR = Path(__file__).resolve().parent.parent / "methods"


class Registry(Generic[T]):
    """A named collection of one kind of thing (``method``, ``backbone``, ``dataset``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def add(self, name: str, obj: T, source: str | None = None) -> T:
        """Register ``obj`` under ``name``; a second, different source for a name is an error."""
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
        """Decorator form of :meth:`add`."""

        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``, or an error that lists the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise CalibenchError(
                f"unknown {self.kind} {name!r}. Valid {self.kind}s: {', '.join(self.names())}."
            ) from None

    def source(self, name: str) -> str:
        return self._sources[name]

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style pattern."""
        names = sorted(self._entries)
        return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._sources.pop(name, None)


def _source_of(obj: object) -> str:
    try:
        return f"{inspect.getsourcefile(obj)}"  # type: ignore[arg-type]
    except TypeError:
        return repr(obj)


METHODS: Registry = Registry("method")
BACKBONES: Registry = Registry("backbone")
DATASETS: Registry = Registry("dataset")


def load_plugin_file(path: Path) -> object:
    """Import one plugin file by path; importing it registers whatever it declares."""
    path = path.resolve()
    name = f"calibench_plugins.{path.parent.name}.{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CalibenchError(f"cannot import plugin file {path}: it is not a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except CalibenchError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        raise CalibenchError(f"plugin file {path} failed to import: {exc!r}") from exc
    return module


def load_plugin_dir(directory: Path) -> list[object]:
    """Import every ``*.py`` file (not starting with ``_``) in ``directory``."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CalibenchError(
            f"plugin folder {str(directory)!r} does not exist or is not a folder. "
            "Pass a folder that holds method files (--plugins DIR or [plugins] paths)."
        )
    return [
        load_plugin_file(p) for p in sorted(directory.glob("*.py")) if not p.name.startswith("_")
    ]


def load_entry_points() -> None:
    """Import every installed package that declares the ``calibench.methods`` entry point."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise CalibenchError(
                f"the installed plugin {ep.name!r} ({ep.value}) failed to import: {exc!r}"
            ) from exc


def discover_plugins(extra_dirs: Iterable[Path] = ()) -> None:
    """Load the built-in methods, installed entry points and any extra plugin folders."""
    import calibench.data  # noqa: F401  (registers the datasets)
    import calibench.models  # noqa: F401  (registers the backbones)

    load_plugin_dir(BUILTIN_METHODS_DIR)
    load_entry_points()
    for directory in extra_dirs:
        load_plugin_dir(Path(directory))
