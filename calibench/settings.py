"""Typed settings: one coercion path for method hyperparameters, calibrator hyperparameters and
training settings.

A setting's dataclass annotation is its type; ``Literal[...]`` annotations hold the valid
choices. Values come from TOML or ``--set``, so ints are accepted for floats (never bools), and
every float must be finite (``inf`` and ``nan`` are rejected: no rate, margin or weight is
meaningful there).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from calibench.errors import CalibenchError

_EXPECTED = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` as a value of type ``kind`` (a dataclass field's annotation), or a
    :class:`CalibenchError` naming the setting ``name``, what it must be and what it got."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        errors = []
        for option in options:
            try:
                return coerce(value, option, name)
            except CalibenchError as exc:
                errors.append(str(exc).removeprefix(f"{name} must be ").rstrip("."))
        wanted = " or ".join(e.split(", got ")[0] for e in errors)
        raise CalibenchError(f"{name} must be {wanted}, got {value!r}.")
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        wanted = (
            repr(choices[0]) if len(choices) == 1 else f"one of {', '.join(map(repr, choices))}"
        )
        raise CalibenchError(f"{name} must be {wanted}, got {value!r}.")
    if origin is tuple:
        (item, *_rest) = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            raise CalibenchError(f"{name} must be a list of numbers, got {value!r}.")
        return tuple(coerce(v, item, f"{name} entry") for v in value)
    if kind is float:
        if _is_number(value) and math.isfinite(value):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    expected = _EXPECTED.get(kind, getattr(kind, "__name__", str(kind)))
    raise CalibenchError(f"{name} must be {expected}, got {value!r}.")


def field_types(cls: type) -> dict[str, tuple[Any, Any]]:
    """Field name -> (resolved annotation, default) of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls)}


def build_settings(cls: type, values: dict[str, Any], what: str, noun: str = "setting") -> Any:
    """Instantiate dataclass ``cls`` from ``values``, each coerced to its field's type; unknown
    names are one error listing the valid ones. ``what`` prefixes every message."""
    fields = field_types(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise CalibenchError(f"{what} has no {noun} {', '.join(unknown)}. Valid: {valid}.")
    return cls(**{k: coerce(v, fields[k][0], f"{what}: {k}") for k, v in values.items()})


def dataclass_registrar(registry: Any, base: type, name: str) -> Any:
    """A class decorator that makes a ``base`` subclass a dataclass (if it is not one yet),
    names it ``name`` and adds it to ``registry``: the shared form of ``register_method`` and
    ``register_calibrator``."""

    def decorate(cls: type) -> type:
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__module__}.{base.__name__}")
        if "__dataclass_fields__" not in cls.__dict__:
            cls = dataclasses.dataclass(cls)
        cls.name = name
        return registry.add(name, cls)

    return decorate
