"""The post-hoc calibrator contract: a dataclass of hyperparameters with ``fit`` and ``transform``.

A calibrator is fitted on validation logits and labels and maps any logits (test, shifted, OOD)
to probabilities: ``get_calibrator(name, **hp).fit(val_logits, val_labels).transform(logits)``.
Definitions and defaults: docs/calibrators.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
from scipy.special import log_softmax

from calibench.errors import CalibenchError
from calibench.registry import CALIBRATORS
from calibench.settings import (
    build_settings,
    check_fields,
    dataclass_registrar,
    dataclass_transform,
    field_types,
)

MIN_PER_CLASS = 10
"""Calibrators with per-class parameters warn when a class has fewer validation samples than
this: the rule of thumb of about 10 events per fitted variable in logistic regression (Peduzzi
et al., J. Clin. Epidemiol. 1996)."""


class Calibrator:
    """Base class of every post-hoc calibrator. Subclasses are dataclasses whose fields are the
    hyperparameters, each annotated with its type and range (:mod:`calibench.settings`); they
    implement :meth:`_fit` and :meth:`_transform` (and :meth:`validate` for a constraint that is
    not a range of one field).

    :meth:`fit` and :meth:`transform` check the arrays and convert them to float64 logits
    (N, K) and int64 labels (N,) before calling the subclass; ``_transform`` returns (N, K)
    probabilities whose rows sum to 1, and ``_log_transform`` (optional) their exact logarithm.
    Fitted parameters are plain attributes, not fields. ``warning`` is empty when the fit is
    sound, else says why it is not (docs/calibrators.md, "Warnings"); a subclass adds to it with
    :meth:`warn`. ``min_per_class`` > 0 makes :meth:`fit` warn when a class has fewer validation
    samples than that.
    """

    name: ClassVar[str] = ""
    min_per_class: ClassVar[int] = 0
    _n_classes: int | None = None
    _warnings: tuple[str, ...] = ()
    if TYPE_CHECKING:  # every subclass is made a dataclass by register_calibrator
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        check_fields(self, f"calibrator {self.name}")
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CalibenchError` (through :meth:`require`) for invalid hyperparameters."""

    def require(self, condition: bool, message: str) -> None:
        """Fail with ``calibrator <name>: <message>`` unless ``condition`` holds."""
        if not condition:
            raise CalibenchError(f"calibrator {self.name}: {message}")

    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def fitted(self) -> bool:
        return self._n_classes is not None

    @property
    def warning(self) -> str:
        """Why the last fit is not sound ("; "-joined reasons), or "" when it is."""
        return "; ".join(self._warnings)

    def warn(self, reason: str) -> None:
        """Record one reason why the current fit is not sound (shown in ``warning``)."""
        self._warnings = (*self._warnings, reason)

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Calibrator:
        """Fit on validation ``logits`` (N, K) and integer ``labels`` (N,); returns ``self``."""
        z = self._check_logits(logits, "fit")
        y = _as_labels(labels, z.shape, self.name)
        self._warnings = ()
        counts = np.bincount(y, minlength=z.shape[1])
        if counts.min() < self.min_per_class:
            self.warn(
                f"too few samples per class: class {int(counts.argmin())} has "
                f"{int(counts.min())} validation samples (< {self.min_per_class})"
            )
        self._fit(z, y)
        self._n_classes = z.shape[1]
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, K), float64, each row summing to 1."""
        return self._transform(self._checked_for_transform(logits))

    def log_transform(self, logits: np.ndarray) -> np.ndarray:
        """The logarithm of :meth:`transform`, exact where the calibrator has it (e.g.
        log_softmax for the scaling calibrators, so an NLL needs no floor); -inf where a
        probability is exactly 0."""
        return self._log_transform(self._checked_for_transform(logits))

    def _log_transform(self, logits: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self._transform(logits))

    def _checked_for_transform(self, logits: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise CalibenchError(
                f"calibrator {self.name}: transform called before fit. Call "
                ".fit(val_logits, val_labels) first."
            )
        z = self._check_logits(logits, "transform")
        if z.shape[1] != self._n_classes:
            raise CalibenchError(
                f"calibrator {self.name}: fitted on {self._n_classes} classes but transform got "
                f"logits with {z.shape[1]} columns. Pass logits of the same classifier."
            )
        return z

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_logits(self, logits: np.ndarray, call: str) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
            raise CalibenchError(
                f"calibrator {self.name}: {call} needs logits of shape (N, K) with N >= 1 and "
                f"K >= 2, got shape {z.shape}."
            )
        if not np.all(np.isfinite(z)):
            raise CalibenchError(
                f"calibrator {self.name}: {call} got logits with NaN or infinite values."
            )
        return z


def _as_labels(labels: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    y = np.asarray(labels)
    n, k = shape
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise CalibenchError(
            f"calibrator {name}: fit needs integer labels of shape ({n},) to match the logits, "
            f"got dtype {y.dtype} and shape {y.shape}."
        )
    if y.min() < 0 or y.max() >= k:
        raise CalibenchError(
            f"calibrator {name}: labels must lie in [0, {k - 1}] for {k}-class logits, got "
            f"values from {y.min()} to {y.max()}."
        )
    return y.astype(np.int64)


def renormalise(scores: np.ndarray) -> np.ndarray:
    """Divide each row of non-negative ``scores`` by its sum; a row that sums to 0 becomes the
    uniform distribution 1/K (docs/calibrators.md, "Renormalisation")."""
    totals = scores.sum(axis=1, keepdims=True)
    out = np.full_like(scores, 1.0 / scores.shape[1])
    np.divide(scores, totals, out=out, where=totals > 0)
    return out


@dataclasses.dataclass
class Uncalibrated(Calibrator):
    """The plain softmax, softmax(z): the ``none`` row beside the fitted calibrators. Not
    registered (it fits nothing)."""

    name: ClassVar[str] = "none"

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        return None

    def _transform(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(self._log_transform(logits))

    def _log_transform(self, logits: np.ndarray) -> np.ndarray:
        return log_softmax(logits, axis=1)


_C = TypeVar("_C", bound=Calibrator)


@dataclass_transform()
def register_calibrator(name: str) -> Callable[[type[_C]], type[_C]]:
    """Class decorator: make ``cls`` a dataclass (if it is not one yet) and register it as
    ``name``. Usage::

        @register_calibrator("my_calibrator")
        class MyCalibrator(Calibrator):
            strength: float = 1.0
            def _fit(self, logits, labels): ...
            def _transform(self, logits): ...
    """

    return dataclass_registrar(CALIBRATORS, Calibrator, name)


def calibrator_fields(name: str) -> dict[str, tuple[type, Any]]:
    """Hyperparameter name -> (type, default) of registered calibrator ``name``."""
    return field_types(CALIBRATORS.get(name))


def get_calibrator(name: str, **hyperparameters: Any) -> Calibrator:
    """An unfitted calibrator ``name`` with validated, type-checked hyperparameters."""
    return build_settings(
        CALIBRATORS.get(name), hyperparameters, f"calibrator {name}", "hyperparameter"
    )


def list_calibrators(pattern: str | None = None) -> list[str]:
    """Registered calibrator names, optionally filtered by a shell-style pattern."""
    return CALIBRATORS.names(pattern)
