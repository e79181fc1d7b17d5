"""Which device a run uses, and its mixed precision."""

from __future__ import annotations

import torch

from calibench.errors import CalibenchError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CalibenchError(
            "--device cuda was asked for, but no CUDA GPU is visible. Use --device auto or cpu."
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise CalibenchError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CalibenchError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CalibenchError(
            f"device {name} does not exist: {torch.cuda.device_count()} GPU(s) are visible."
        )
    return device


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 mixed precision when ``precision == "bf16"``, else a disabled autocast."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
