"""Reading logits and labels written by any code, for ``calibench metrics``.

Accepted files: ``.npy`` (one array), ``.npz`` (arrays by key, e.g. a run's ``logits.npz``),
``.pt``/``.pth`` (a tensor or a dict of tensors, loaded with ``weights_only=True``) and
``.csv``/``.txt`` (one sample per row; a non-numeric first line is a header). Every check that
fails raises one :class:`~calibench.errors.CalibenchError` saying what to fix; the rules are in
docs/report.md, "calibench metrics".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from calibench.errors import CalibenchError

SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".csv", ".txt")
LOGIT_KEYS = ("test_logits", "logits")
LABEL_KEYS = ("test_labels", "labels")
PROBABILITY_TOLERANCE = 1e-4
"""How far a row sum may be from 1 for the row to count as a probability vector."""


def _numeric(name: str, value: Any, path: Path) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise CalibenchError(
            f"{path}{f' [{name}]' if name else ''} holds {array.dtype} values, not numbers; "
            "save the logits or labels as a numeric array."
        )
    return array


def _text_table(path: Path) -> np.ndarray:
    delimiter = "," if path.suffix.lower() == ".csv" else None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise CalibenchError(f"{path} is empty; it needs one row per sample.")

    def parses(line: str) -> bool:
        try:
            [float(v) for v in line.split(delimiter)]
        except ValueError:
            return False
        return True

    body = lines[1:] if not parses(lines[0]) else lines
    try:
        rows = [[float(v) for v in line.split(delimiter)] for line in body]
    except ValueError as exc:
        raise CalibenchError(f"{path} has a value that is not a number ({exc}).") from None
    if len({len(r) for r in rows}) > 1:
        raise CalibenchError(f"{path}: the rows have different numbers of columns.")
    table = np.array(rows, dtype=np.float64)
    return table[:, 0] if table.ndim == 2 and table.shape[1] == 1 else table


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every numeric array of ``path`` by key; a single-array file (.npy, .csv, a lone tensor)
    has the key ``""``."""
    path = Path(path)
    if not path.is_file():
        raise CalibenchError(f"{path} does not exist or is not a file.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CalibenchError(
            f"{path}: unknown file type {suffix or '(none)'}; use one of {', '.join(SUFFIXES)}."
        )
    try:
        if suffix == ".npy":
            return {"": _numeric("", np.load(path, allow_pickle=False), path)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: _numeric(k, f[k], path) for k in f.files}
        if suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                return {str(k): _numeric(str(k), v, path) for k, v in obj.items()}
            return {"": _numeric("", obj, path)}
        return {"": _text_table(path)}
    except CalibenchError:
        raise
    except Exception as exc:
        raise CalibenchError(
            f"cannot read {path} as {suffix} ({type(exc).__name__}: {exc})."
        ) from None


def pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...], path: Path, what: str) -> np.ndarray:
    """The first of ``keys`` present in ``arrays``, or the file's only array."""
    for key in keys:
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise CalibenchError(
        f"{path} holds the arrays {', '.join(sorted(arrays)) or '(none)'}, none of them named "
        f"{' or '.join(keys)}; save the {what} under one of those names."
    )


def check_logits(logits: np.ndarray, where: str) -> np.ndarray:
    """``logits`` as float64 (N, K), K >= 2, every value finite."""
    if logits.ndim != 2 or logits.shape[1] < 2 or logits.shape[0] < 1:
        raise CalibenchError(
            f"{where} has shape {logits.shape}; expected (N, K): one row per sample and one "
            "column per class, K >= 2."
        )
    logits = logits.astype(np.float64, copy=False)
    bad = ~np.isfinite(logits)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise CalibenchError(
            f"{where} has {int(np.isnan(logits).sum())} NaN and {int(np.isinf(logits).sum())} "
            f"infinite values (first in row {row}); metrics need finite logits."
        )
    return logits


def is_probability_table(values: np.ndarray) -> bool:
    """Whether every entry is in [0, 1] and every row sums to 1 (within
    :data:`PROBABILITY_TOLERANCE`)."""
    return bool(
        (values >= 0).all()
        and (values <= 1).all()
        and np.allclose(values.sum(axis=1), 1.0, rtol=0, atol=PROBABILITY_TOLERANCE)
    )


def as_logits(values: np.ndarray, where: str, probabilities: bool) -> np.ndarray:
    """Checked logits. Rows that look like probabilities are refused unless ``probabilities``;
    then they are turned into logits by log p (p = 0 gives -inf: softmax maps it back to 0)."""
    values = check_logits(values, where)
    looks_like_probabilities = is_probability_table(values)
    if probabilities:
        if not looks_like_probabilities:
            raise CalibenchError(
                f"{where}: --probabilities was given, but not every row is in [0, 1] and sums "
                "to 1; drop --probabilities if these are logits."
            )
        with np.errstate(divide="ignore"):
            return np.log(values)
    if looks_like_probabilities:
        raise CalibenchError(
            f"{where} looks like probabilities (every row in [0, 1], summing to 1), not logits; "
            "softmax of them would be wrong. Pass --probabilities to use log p as the logits."
        )
    return values


def check_labels(labels: np.ndarray, n: int, k: int, where: str) -> np.ndarray:
    """``labels`` as int64 (N,), every value an integer class index in [0, K)."""
    if labels.ndim == 2 and labels.shape == (n, k):
        raise CalibenchError(
            f"{where} has shape {labels.shape}, like one-hot rows; give class indices (N,), "
            "e.g. labels.argmax(axis=1)."
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise CalibenchError(f"{where} has shape {labels.shape}; expected (N,) class indices.")
    if len(labels) != n:
        raise CalibenchError(
            f"{where} has {len(labels)} labels but the logits have {n} rows; they must match "
            "one to one."
        )
    if labels.dtype.kind == "b":
        raise CalibenchError(f"{where} holds booleans; give integer class indices in [0, {k}).")
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            row = int(np.argmin(whole))
            raise CalibenchError(
                f"{where} holds a label that is not an integer ({labels[row]!r} in row {row}); "
                "labels are class indices 0..K-1."
            )
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= k:
        raise CalibenchError(
            f"{where} has labels from {labels.min()} to {labels.max()}, outside the {k} classes "
            f"of the logits (0..{k - 1})."
        )
    return labels


def _split(
    logits_path: Path,
    labels_path: Path | None,
    logit_keys: tuple[str, ...],
    label_keys: tuple[str, ...],
    probabilities: bool,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    arrays = read_arrays(logits_path)
    values = pick(arrays, logit_keys, logits_path, "logits")
    if labels_path is not None:
        labels = pick(read_arrays(labels_path), label_keys, labels_path, "labels")
        label_where = str(labels_path)
    elif any(k in arrays for k in label_keys):
        labels = pick(arrays, label_keys, logits_path, "labels")
        label_where = f"{logits_path} [{next(k for k in label_keys if k in arrays)}]"
    else:
        raise CalibenchError(
            f"no labels for {logits_path}: pass --labels FILE (or save them in an .npz/.pt "
            f"under {' or '.join(label_keys)})."
        )
    logits = as_logits(values, str(logits_path), probabilities)
    n, k = logits.shape  # (N, K): as_logits checked it
    return logits, check_labels(labels, n, k, label_where), arrays


def load_logit_set(
    logits: Path,
    labels: Path | None = None,
    val_logits: Path | None = None,
    val_labels: Path | None = None,
    probabilities: bool = False,
) -> dict[str, np.ndarray]:
    """Test (and, when given or stored beside them, validation) logits and labels in the keys of
    a run's ``logits.npz``: ``test_logits``, ``test_labels``, ``val_logits``, ``val_labels`` and
    ``ood_<name>_logits`` arrays found in the logits file."""
    test, test_y, arrays = _split(logits, labels, LOGIT_KEYS, LABEL_KEYS, probabilities)
    out = {"test_logits": test, "test_labels": test_y}
    if val_logits is None and val_labels is not None:
        raise CalibenchError("--val-labels needs --val-logits (the validation logits).")
    if val_logits is not None:
        val, val_y, _ = _split(
            val_logits,
            val_labels,
            ("val_logits", *LOGIT_KEYS),
            ("val_labels", *LABEL_KEYS),
            probabilities,
        )
    elif "val_logits" in arrays and "val_labels" in arrays:
        val = as_logits(arrays["val_logits"], f"{logits} [val_logits]", probabilities)
        n, k = val.shape  # (N, K): as_logits checked it
        val_y = check_labels(arrays["val_labels"], n, k, f"{logits} [val_labels]")
    else:
        return out
    if val.shape[1] != test.shape[1]:
        raise CalibenchError(
            f"the validation logits have {val.shape[1]} classes and the test logits "
            f"{test.shape[1]}; both must come from the same model."
        )
    out.update(val_logits=val, val_labels=val_y)
    for key, value in arrays.items():
        if key.startswith("ood_") and key.endswith("_logits"):
            ood = as_logits(value, f"{logits} [{key}]", probabilities)
            if ood.shape[1] != test.shape[1]:
                raise CalibenchError(
                    f"{logits} [{key}] has {ood.shape[1]} classes, not {test.shape[1]}."
                )
            out[key] = ood
    return out
