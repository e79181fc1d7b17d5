"""Typed settings: one validation form for method hyperparameters, calibrator hyperparameters and
training settings.

A setting's dataclass annotation is both its type and its range::

    alpha: Annotated[float, Gt(0)] = 1.0
    num_mixup: Annotated[int, Ge(1), Le(64)] = 3
    momentum: Annotated[float, Interval(0, 1, closed="left")] = 0.9

``Literal[...]`` annotations hold the valid choices, ``X | None`` admits None, and
``tuple[X, ...]`` a list of X. Values come from TOML or ``--set``, so ints are accepted for
floats (never bools), and every float must be finite (``inf`` and ``nan`` are rejected: no rate,
margin or weight is meaningful there). A bad value is one line naming the setting, the rule and
the value; all bad values of one table are one message.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from calibench.errors import CalibenchError

_T = TypeVar("_T")

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover

    def dataclass_transform() -> Callable[[_T], _T]:
        """Python 3.10 has no typing.dataclass_transform: a marker for type checkers only."""
        return lambda decorated: decorated


_EXPECTED = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}

Number = int | float


def _text(bound: Number) -> str:
    return repr(bound) if isinstance(bound, float) and not bound.is_integer() else str(int(bound))


class Constraint:
    """A rule on a setting's value, attached to its type as ``Annotated[type, rule, ...]``.

    ``note`` (optional) says why the rule holds or what an edge value means; it follows the rule
    in the message."""

    note: str = ""

    def holds(self, value: Any) -> bool:
        """True when ``value`` (already of the setting's type) obeys the rule."""
        raise NotImplementedError

    def rule(self) -> str:
        """The rule as the words after "must be", e.g. ``>= 0`` or ``in [0, 1)``."""
        raise NotImplementedError

    def describe(self) -> str:
        """:meth:`rule` followed by the note, if any."""
        return f"{self.rule()} ({self.note})" if self.note else self.rule()


@dataclass(frozen=True)
class _Bound(Constraint):
    bound: Number
    note: str = ""
    _symbol: typing.ClassVar[str] = ""
    _compare: typing.ClassVar[Callable[[Any, Any], bool]]

    def holds(self, value: Any) -> bool:
        return bool(type(self)._compare(value, self.bound))

    def rule(self) -> str:
        return f"{self._symbol} {_text(self.bound)}"


@dataclass(frozen=True)
class Gt(_Bound):
    """value > bound."""

    _symbol = ">"
    _compare = operator.gt


@dataclass(frozen=True)
class Ge(_Bound):
    """value >= bound."""

    _symbol = ">="
    _compare = operator.ge


@dataclass(frozen=True)
class Lt(_Bound):
    """value < bound."""

    _symbol = "<"
    _compare = operator.lt


@dataclass(frozen=True)
class Le(_Bound):
    """value <= bound."""

    _symbol = "<="
    _compare = operator.le


Closed = Literal["both", "left", "right", "neither"]


@dataclass(frozen=True)
class Interval(Constraint):
    """low <= value <= high, each end included or not as ``closed`` says (as pandas'
    ``Interval``): ``"both"`` [low, high], ``"left"`` [low, high), ``"right"`` (low, high],
    ``"neither"`` (low, high)."""

    low: Number
    high: Number
    closed: Closed = "both"
    note: str = ""

    def holds(self, value: Any) -> bool:
        above = value >= self.low if self.closed in ("both", "left") else value > self.low
        below = value <= self.high if self.closed in ("both", "right") else value < self.high
        return bool(above and below)

    def rule(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{_text(self.low)}, {_text(self.high)}{right}"


class _Invalid(Exception):
    """A value that breaks its annotation: what it had to be, what it was, and where inside a
    list (``[i]``) it sits."""

    def __init__(self, wanted: str, value: Any, at: str = "") -> None:
        super().__init__(wanted)
        self.wanted, self.value, self.at = wanted, value, at


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _annotated(value: Any, kind: Any) -> Any:
    base, *rules = typing.get_args(kind)
    value = _coerce(value, base)
    for rule in rules:
        if isinstance(rule, Constraint) and value is not None and not rule.holds(value):
            raise _Invalid(rule.describe(), value)
    return value


def _union(value: Any, kind: Any) -> Any:
    options = [k for k in typing.get_args(kind) if k is not type(None)]
    if value is None and len(options) < len(typing.get_args(kind)):
        return None
    if len(options) == 1:
        return _coerce(value, options[0])
    wanted = []
    for option in options:
        try:
            return _coerce(value, option)
        except _Invalid as exc:
            wanted.append(exc.wanted)
    raise _Invalid(" or ".join(wanted), value)


def _literal(value: Any, kind: Any) -> Any:
    choices = typing.get_args(kind)
    if any(value == c and type(value) is type(c) for c in choices):
        return value
    wanted = repr(choices[0]) if len(choices) == 1 else f"one of {', '.join(map(repr, choices))}"
    raise _Invalid(wanted, value)


def _sequence(value: Any, kind: Any) -> tuple[Any, ...]:
    (item, *_rest) = typing.get_args(kind)
    if not isinstance(value, list | tuple):
        raise _Invalid("a list of numbers", value)
    out = []
    for i, entry in enumerate(value):
        try:
            out.append(_coerce(entry, item))
        except _Invalid as exc:
            raise _Invalid(exc.wanted, exc.value, f"[{i}]{exc.at}") from None
    return tuple(out)


def _plain(value: Any, kind: Any) -> Any:
    if kind is float:
        if _is_number(value) and math.isfinite(value):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    raise _Invalid(_EXPECTED.get(kind, getattr(kind, "__name__", str(kind))), value)


_FORMS: dict[Any, Callable[[Any, Any], Any]] = {
    Annotated: _annotated,
    typing.Union: _union,
    types.UnionType: _union,
    Literal: _literal,
    tuple: _sequence,
}


def _coerce(value: Any, kind: Any) -> Any:
    form = _FORMS.get(typing.get_origin(kind), _plain)
    return form(value, kind)


def coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` as a value of type ``kind`` (a dataclass field's annotation, constraints
    included), or a :class:`CalibenchError` naming the setting ``name``, the rule and the value."""
    try:
        return _coerce(value, kind)
    except _Invalid as exc:
        raise CalibenchError(f"{name}{exc.at} must be {exc.wanted}, got {exc.value!r}.") from None


@functools.cache
def _hints(cls: type) -> dict[str, tuple[Any, Any, Any]]:
    full = typing.get_type_hints(cls, include_extras=True)
    plain = typing.get_type_hints(cls)
    return {f.name: (full[f.name], plain[f.name], f.default) for f in dataclasses.fields(cls)}


def field_types(cls: type) -> dict[str, tuple[Any, Any]]:
    """Field name -> (type, default) of dataclass ``cls``, the type without its constraints."""
    return {name: (plain, default) for name, (_, plain, default) in _hints(cls).items()}


def field_annotations(cls: type) -> dict[str, Any]:
    """Field name -> annotation of dataclass ``cls``, constraints included (``Annotated``)."""
    return {name: full for name, (full, _, _) in _hints(cls).items()}


def check_values(
    cls: type, values: Iterable[tuple[str, Any]], prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Coerce ``(field, value)`` pairs to the annotations of dataclass ``cls``: returns the
    coerced values and one problem line (``<prefix><field> must be ..., got ...``) per bad value.
    Every field must exist."""
    kinds = field_annotations(cls)
    coerced: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values:
        try:
            coerced[key] = coerce(value, kinds[key], f"{prefix}{key}")
        except CalibenchError as exc:
            problems.append(str(exc).removesuffix("."))
    return coerced, problems


def problems_message(what: str, problems: list[str]) -> str:
    """All problems of one table as one message: ``<what>: <problem>; <problem>.``"""
    return f"{what}: {'; '.join(problems)}."


def check_fields(obj: Any, what: str) -> None:
    """Raise one :class:`CalibenchError` listing every field of dataclass instance ``obj`` whose
    value breaks its annotation (type or range); ``what`` prefixes the message."""
    values = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    _, problems = check_values(type(obj), values)
    if problems:
        raise CalibenchError(problems_message(what, problems))


def build_settings(cls: type, values: dict[str, Any], what: str, noun: str = "setting") -> Any:
    """Instantiate dataclass ``cls`` from ``values``, each coerced to its field's annotation;
    unknown names are one error listing the valid ones, bad values one error listing them all.
    ``what`` prefixes every message."""
    fields = field_annotations(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise CalibenchError(f"{what} has no {noun} {', '.join(unknown)}. Valid: {valid}.")
    coerced, problems = check_values(cls, values.items())
    if problems:
        raise CalibenchError(problems_message(what, problems))
    return cls(**coerced)


class Named(Protocol):
    """A class that a registrar names: ``Method`` and ``Calibrator`` subclasses."""

    name: ClassVar[str]


_N = TypeVar("_N", bound=Named)


def dataclass_registrar(registry: Any, base: type, name: str) -> Callable[[type[_N]], type[_N]]:
    """A class decorator that makes a ``base`` subclass a dataclass (if it is not one yet),
    names it ``name`` and adds it to ``registry``: the shared form of ``register_method`` and
    ``register_calibrator``. An unusable ``name`` fails here, before any class is seen."""
    registry.check_name(name)

    def decorate(cls: type[_N]) -> type[_N]:
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__module__}.{base.__name__}")
        if "__dataclass_fields__" not in cls.__dict__:
            cls = dataclasses.dataclass(cls)
        cls.name = name
        return typing.cast("type[_N]", registry.add(name, cls))

    return decorate
