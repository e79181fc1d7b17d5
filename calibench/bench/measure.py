"""What the bench measures with: the device's name and its datasheet peak FLOP/s, a FLOP
counter, and the peak memory of a block of work (docs/speed.md)."""

from __future__ import annotations

import ctypes
import platform
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    """Wait until the device's queued work is done (CUDA; nothing on the CPU), so that a clock
    read after it times finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    ("H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
)
"""Dense peak TFLOP/s (no structured sparsity) by GPU model, from NVIDIA's datasheets: the
tensor-core bf16 and tf32 figures (the datasheets' sparse figures halved) and the plain fp32 one.
The first entry whose words all occur in the device name wins (docs/speed.md cites the sheets)."""


def peak_tflops_for(device_name: str, mode: str) -> float | None:
    """The dense peak of ``mode`` ("bf16", "tf32" or "fp32") for a GPU named as
    ``torch.cuda.get_device_name`` names it, or None for a GPU not in :data:`PEAK_TFLOPS`."""
    words = set(re.split(r"[\s_-]+", device_name.upper()))
    for key, peaks in PEAK_TFLOPS:
        if set(key.upper().split()) <= words:
            return peaks[mode]
    return None


def matmul_mode(precision: str) -> str:
    """The GPU arithmetic a path's convolutions use: bf16 under bf16 autocast; in float32, tf32
    when PyTorch lets cuDNN use TF32 tensor cores (its default), else plain fp32."""
    if precision == "bf16":
        return "bf16"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo (the platform's name elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matrix products and convolutions ``fn`` runs, forward and backward, as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class MemoryProbe:
    """Peak memory of a block of work above the memory in use when it started.

    CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` at the start. CPU
    (Linux): the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) minus
    its resident set at the start, after glibc's ``malloc_trim`` has returned freed heap pages
    (else the allocator's cache would hide the block's own memory); this process only, so
    DataLoader workers are not counted. Elsewhere ``peak`` returns None."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        if device.type == "cuda":
            self.kind = "torch.cuda.max_memory_allocated - memory_allocated at block start"
        else:
            self.kind = (
                "peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS at block start after "
                "malloc_trim; main process only, DataLoader workers excluded"
            )
            self._trim = _malloc_trim()

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._trim()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = self._status_bytes("VmRSS")
        except OSError:
            self.base = -1

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.base < 0:
            return None
        try:
            return max(0, self._status_bytes("VmHWM") - self.base)
        except OSError:
            return None

    @staticmethod
    def _status_bytes(key: str) -> int:
        status = Path("/proc/self/status").read_text()
        match = re.search(rf"^{key}:\s*(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise OSError(f"{key} not in /proc/self/status")
        return 1024 * int(match.group(1))


def _malloc_trim() -> Callable[[], Any]:
    """glibc's ``malloc_trim(0)``, or a no-op where there is none."""
    try:
        return partial(ctypes.CDLL("libc.so.6").malloc_trim, 0)
    except (OSError, AttributeError):
        return lambda: None
