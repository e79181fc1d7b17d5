"""Post-hoc calibrators: fitted on validation logits, applied to test, shifted and OOD logits.

The whole API is ``get_calibrator(name, **hyperparameters).fit(val_logits, val_labels)
.transform(logits) -> probabilities`` (N, K), float64, rows summing to 1. Importing this package
registers the built-in calibrators; definitions, objectives and defaults: docs/calibrators.md.
"""

from calibench.evaluation.calibrators import binning, ensemble, linear, temperature  # noqa: F401 (register)
from calibench.evaluation.calibrators.base import (
    Calibrator,
    calibrator_fields,
    get_calibrator,
    list_calibrators,
    register_calibrator,
    renormalise,
)

__all__ = [
    "Calibrator",
    "calibrator_fields",
    "get_calibrator",
    "list_calibrators",
    "register_calibrator",
    "renormalise",
]
