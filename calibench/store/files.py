"""How calibench writes files: atomically (a temporary name in the same folder, fsync, rename),
so an interruption never leaves a half-written file; and JSON strictly (no NaN or Infinity
tokens, which strict parsers reject)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

UMASK = os.umask(0)
os.umask(UMASK)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, so that the JSON is strict (no
    ``NaN``/``Infinity`` tokens, which strict parsers reject)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def non_finite_keys(metrics: dict[str, Any]) -> list[str]:
    """The keys of ``metrics`` whose value is a non-finite float."""
    return sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as strict, indented JSON, atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    _atomic(path, lambda p: p.write_text(text))


def write_text(path: Path, text: str) -> None:
    """Write ``text``, atomically."""
    _atomic(path, lambda p: p.write_text(text))


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Save arrays to an ``.npz`` file, atomically."""

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    _atomic(path, write)


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically (torch is imported here: reading a store needs no torch)."""
    import torch

    _atomic(path, lambda p: torch.save(obj, p))


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or damaged."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
