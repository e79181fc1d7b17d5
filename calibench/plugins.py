"""Plugin discovery: the built-in method files, installed entry points and plugin folders.

Built-in methods are plugin files like any user's: the repository's top-level ``methods/``
folder, which the wheel ships as the package ``calibench.methods``. Importing a file registers
whatever it declares.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from calibench.errors import CalibenchError

ENTRY_POINT_GROUP = "calibench.methods"


def builtin_methods_dir() -> Path:
    """The folder of the built-in method files: ``calibench/methods`` in an installed wheel (or
    an editable install's mapping), else ``methods/`` beside the package in a source checkout."""
    spec = importlib.util.find_spec("calibench.methods")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(__file__).resolve().parent.parent / "methods"


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


def load_builtin_methods() -> None:
    """Register the built-in methods and those of installed packages (entry points)."""
    load_plugin_dir(builtin_methods_dir())
    load_entry_points()


def discover_plugins(extra_dirs: Iterable[Path] = ()) -> None:
    """Load the built-in methods, installed entry points and any extra plugin folders."""
    from calibench.registry import METHODS

    METHODS.names()
    for directory in extra_dirs:
        load_plugin_dir(Path(directory))
