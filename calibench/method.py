"""The method plugin contract: a dataclass of hyperparameters with a ``loss(model, x, y)``.

A method owns what differs between calibration methods (the batch transform and the loss,
including extra forward passes); the model, optimiser, data and evaluation are the trainer's and
identical for every method (docs/protocol.md, "The method contract").

Stateful methods (a per-sample history, a per-class decision at each epoch end) use optional
pieces of the same contract; a method that ignores them is trained exactly as before:

- ``uses_indices = True`` (a plain class attribute): the trainer calls
  ``loss(model, x, y, indices)``, where ``indices`` are the batch's positions in the training
  split (0 .. num_train - 1), on the batch's device.
- ``setup(info)``: called once before training (before a resumed run's state is restored) with
  a :class:`TrainingSetup` (training-set size, number of classes).
- ``on_epoch_end(epoch, val_logits, val_labels)``: called after each epoch's validation pass with
  that pass's logits.
- ``state_dict()`` / ``load_state_dict(state)``: the method's state, saved in every checkpoint and
  restored on resume. It must hold only tensors, numbers, strings, lists and dicts, so that it
  loads with ``torch.load(weights_only=True)``.

The order per run: ``setup`` -> (resume: ``load_state_dict``) -> per epoch: ``loss`` for every
batch, validation, ``on_epoch_end``, checkpoint (``state_dict``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

import numpy as np
import torch
from torch import nn

from calibench.errors import CalibenchError
from calibench.registry import METHODS
from calibench.settings import (
    build_settings,
    check_fields,
    dataclass_registrar,
    dataclass_transform,
    field_types,
)


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


@dataclass(frozen=True)
class TrainingSetup:
    """What the trainer tells a method before training. More fields may be added later; a method
    reads the ones it needs."""

    num_train: int
    """Size of the training split: the indices a method receives lie in ``range(num_train)``."""
    num_classes: int
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
    """In a run trained by several processes (each on its shard of every batch): sums a tensor
    over the processes and returns the sum on every one, so that per-sample state covers the
    whole batch (CRL's correctness history). None in a single-process run."""


class Method:
    """Base class of every training method. Subclasses are dataclasses whose fields are the
    hyperparameters, each annotated with its type and range (``alpha: Annotated[float, Gt(0)]``,
    :mod:`calibench.settings`); they override :meth:`loss` and, for a constraint that is not a
    range of one field, :meth:`validate`.

    Randomness (mixing coefficients, permutations) must come from :attr:`rng`, which the trainer
    seeds from the run seed, so runs are reproducible and resumable.

    State across steps or epochs (not hyperparameters) belongs in plain attributes set in
    :meth:`setup`, never in annotated class attributes (those would become dataclass fields, and
    so hyperparameters), and is checkpointed through :meth:`state_dict`.
    """

    name: ClassVar[str] = ""
    uses_indices: ClassVar[bool] = False
    """True: the trainer calls ``loss(model, x, y, indices)`` with the batch's training-split
    positions."""
    _rng: np.random.Generator | None = None
    if TYPE_CHECKING:  # every subclass is made a dataclass by register_method
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        check_fields(self, f"method {self.name}")
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CalibenchError` (through :meth:`require`) for invalid hyperparameters
        beyond the ranges of the annotations, which are checked before (default: none)."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Loss:
        """The training objective of one batch. A method with ``uses_indices = True`` defines
        ``loss(self, model, x, y, indices)`` instead."""
        raise NotImplementedError

    def setup(self, info: TrainingSetup) -> None:
        """Prepare per-run state (called once by the trainer before training; default: none)."""

    def on_epoch_end(self, epoch: int, val_logits: np.ndarray, val_labels: np.ndarray) -> None:
        """React to the end of ``epoch`` (1-based), given the eval-mode validation logits
        (N, K) float32 and labels (N,) int64 of that epoch (default: nothing)."""

    def state_dict(self) -> dict[str, Any]:
        """The method's state for the checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (default: accepts only an empty state)."""
        self.require(
            not state,
            f"the checkpoint holds method state ({', '.join(map(str, state))}) but this method "
            "keeps none. Retrain the run from scratch (calibench run --force).",
        )

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

    def rng_state(self) -> dict[str, Any]:
        """The random stream's state, for the checkpoint."""
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`rng_state`'s output."""
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
        """Hyperparameter name -> value, in field order (what enters the run id)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class IndexedLoss(Protocol):
    """The ``loss`` of a method with ``uses_indices = True``: the batch's training-split
    positions come after the labels."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor
    ) -> Loss: ...


def training_loss(
    method: Method,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
) -> Loss:
    """The trainer's call: ``loss(model, x, y, indices)`` for a method with ``uses_indices``,
    else ``loss(model, x, y)``."""
    if method.uses_indices:
        return cast(IndexedLoss, method.loss)(model, x, y, indices)
    return method.loss(model, x, y)


_M = TypeVar("_M", bound=Method)


@dataclass_transform()
def register_method(name: str) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: make ``cls`` a dataclass (if it is not one yet) and register it as
    ``name``. Usage::

        @register_method("my_method")
        class MyMethod(Method):
            weight: float = 0.1
            def loss(self, model, x, y): ...
    """

    return dataclass_registrar(METHODS, Method, name)


def method_fields(name: str) -> dict[str, tuple[type, Any]]:
    """Hyperparameter name -> (type, default) of registered method ``name``."""
    return field_types(METHODS.get(name))


def get_method(name: str, **hyperparameters: Any) -> Method:
    """Instantiate registered method ``name`` with validated, type-checked hyperparameters."""
    return build_settings(METHODS.get(name), hyperparameters, f"method {name}", "hyperparameter")


def list_methods(pattern: str | None = None) -> list[str]:
    """Registered method names, optionally filtered by a shell-style pattern."""
    return METHODS.names(pattern)
