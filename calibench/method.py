"""The method plugin contract: a dataclass of hyperparameters with a ``loss(model, x, y)``.

A method owns what differs between calibration methods (the batch transform and the loss,
including extra forward passes); the model, optimiser, data and evaluation are the trainer's and
identical for every method. See DESIGN.md, "The method plugin contract".
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from calibench.errors import CalibenchError
from calibench.registry import METHODS


@dataclass
class Loss:
    """A training step's objective: ``total`` to backpropagate and named ``terms`` to log."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass
class Mix:
    """A mixed batch: inputs l * x + (1 - l) * x[perm], the coefficient l and the permutation."""

    inputs: torch.Tensor
    lam: float
    perm: torch.Tensor


class Method:
    """Base class of every training method. Subclasses are dataclasses whose fields are the
    hyperparameters; they override :meth:`loss` and, for constraints, :meth:`validate`.

    Randomness (mixing coefficients, permutations) must come from :attr:`rng`, which the trainer
    seeds from the run seed, so runs are reproducible and resumable.
    """

    name: ClassVar[str] = ""
    _rng: np.random.Generator | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CalibenchError` (through :meth:`require`) for invalid hyperparameters."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        raise NotImplementedError

    def require(self, condition: bool, message: str) -> None:
        """Fail with ``method <name>: <message>`` unless ``condition`` holds."""
        if not condition:
            raise CalibenchError(f"method {self.name}: {message}")

    @property
    def rng(self) -> np.random.Generator:
        """The method's random stream (seeded by :meth:`seed`; seed 0 until then)."""
        if self._rng is None:
            self._rng = np.random.default_rng(0)
        return self._rng

    def seed(self, seed: int) -> None:
        """Reset the method's random stream (called by the trainer with the run seed)."""
        self._rng = np.random.default_rng(seed)

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def sample_lambda(self, alpha: float) -> float:
        """One mixing coefficient l ~ Beta(alpha, alpha) (Zhang et al. 2018)."""
        return float(self.rng.beta(alpha, alpha))

    def sample_permutation(self, n: int, device: torch.device) -> torch.Tensor:
        """A random permutation of ``range(n)`` on ``device``."""
        return torch.from_numpy(self.rng.permutation(n)).to(device)

    def mix(self, x: torch.Tensor, alpha: float) -> Mix:
        """Mix a batch with a random permutation of itself: x' = l * x + (1 - l) * x[perm],
        one l ~ Beta(alpha, alpha) for the whole batch (Zhang et al., ICLR 2018)."""
        lam = self.sample_lambda(alpha)
        perm = self.sample_permutation(x.shape[0], x.device)
        return Mix(lam * x + (1 - lam) * x[perm], lam, perm)

    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def register_method(name: str):
    """Class decorator: make ``cls`` a dataclass (if it is not one yet) and register it as
    ``name``. Usage::

        @register_method("my_method")
        class MyMethod(Method):
            weight: float = 0.1
            def loss(self, model, x, y): ...
    """

    def decorate(cls: type[Method]) -> type[Method]:
        if not issubclass(cls, Method):
            raise TypeError(f"{cls.__name__} must subclass calibench.Method")
        if "__dataclass_fields__" not in cls.__dict__:
            cls = dataclass(cls)
        cls.name = name
        return METHODS.add(name, cls)

    return decorate


def dataclass_fields(cls: type) -> dict[str, tuple[type, Any]]:
    """Hyperparameter name -> (type, default) of a hyperparameter dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls)}


def method_fields(name: str) -> dict[str, tuple[type, Any]]:
    """Hyperparameter name -> (type, default) of registered method ``name``."""
    return dataclass_fields(METHODS.get(name))


def _coerce(owner: str, key: str, kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        if len(options) == 1:
            kind = options[0]
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise CalibenchError(
                f"{owner}: {key} must be one of {', '.join(map(repr, choices))}, got {value!r}."
            )
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CalibenchError(
            f"{owner}: {key} must be {getattr(kind, '__name__', kind)}, got {value!r}."
        )
    return value


def instantiate(kind: str, name: str, cls: type, hyperparameters: dict[str, Any]) -> Any:
    """``cls(**hyperparameters)`` after rejecting unknown names and type-checking each value;
    ``kind`` and ``name`` (``"method"``, ``"focal"``) prefix the error messages."""
    fields = dataclass_fields(cls)
    unknown = sorted(set(hyperparameters) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise CalibenchError(
            f"{kind} {name} has no hyperparameter {', '.join(unknown)}. Valid: {valid}."
        )
    owner = f"{kind} {name}"
    return cls(**{k: _coerce(owner, k, fields[k][0], v) for k, v in hyperparameters.items()})


def get_method(name: str, **hyperparameters: Any) -> Method:
    """Instantiate registered method ``name`` with validated, type-checked hyperparameters."""
    return instantiate("method", name, METHODS.get(name), hyperparameters)


def list_methods(pattern: str | None = None) -> list[str]:
    """Registered method names, optionally filtered by a shell-style pattern."""
    return METHODS.names(pattern)
