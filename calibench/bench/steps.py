"""Training-step speed: each method's own cost, and calibench's pipeline against the reference.

Two measurements (docs/speed.md):

- :func:`bench_methods`, the per-step cost of each method: each method's ``loss`` is timed twice,
  once with the real model (the whole training step) and once with :class:`CachedLogits`, a
  stand-in model that returns fixed logits, so that only the method's own work (mixing, losses,
  their backward) is left.
- :func:`compare_with_reference`, calibench's training step (the device-resident loader and
  :func:`calibench.training.loop.train_one_epoch`) against the official RankMixup code's pipeline
  (:mod:`calibench.bench.reference`), timed in alternating blocks in one process, with
  throughput in input images per second, peak memory and FLOPs per step.
"""

from __future__ import annotations

import copy
import ctypes
import datetime
import json
import os
import platform
import re
import statistics
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from calibench.data import DeviceLoader, LoaderConfig, load_dataset
from calibench.data.base import Split
from calibench.errors import CalibenchError
from calibench.method import Method, TrainingSetup, get_method, training_loss
from calibench.models import build_backbone
from calibench.registry import DATASETS
from calibench.spec import Training
from calibench.training.fast_path import FastPath, prepare_model, resolve, training_forward
from calibench.training.loop import train_one_epoch


class CachedLogits(nn.Module):
    """A stand-in model: returns the first ``len(x)`` rows of a logit table, counting calls and
    the samples passed through it."""

    def __init__(self, max_batch: int, num_classes: int, device: torch.device) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(max_batch, num_classes, device=device))
        self.calls = 0
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.samples += x.shape[0]
        return self.logits[: x.shape[0]] * 1.0


@dataclass
class BenchRow:
    method: str
    forward_passes: int
    samples_per_input: float
    step_ms: float
    loss_ms: float
    model_ms: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` over ``steps`` synchronised calls, after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_methods(
    methods: list[str],
    dataset: str,
    backbone: str,
    batch_size: int,
    steps: int,
    device: torch.device,
    warmup: int = 2,
) -> list[BenchRow]:
    """Median milliseconds per training step for each method on random inputs shaped like
    ``dataset``: the whole step, the method's own loss work, and the rest (the model)."""
    spec = DATASETS.get(dataset)
    torch.manual_seed(0)
    model = build_backbone(backbone, spec.num_classes, spec.in_channels, spec.image_size).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    shape = (batch_size, spec.in_channels, spec.image_size, spec.image_size)
    x = torch.randn(shape, device=device)
    y = torch.randint(0, spec.num_classes, (batch_size,), device=device)
    indices = torch.arange(batch_size, device=device)
    rows = []
    for name in methods:
        method = get_method(name)
        method.seed(0)
        method.setup(TrainingSetup(batch_size, spec.num_classes))
        stub = CachedLogits(16 * batch_size, spec.num_classes, device)
        step_ms = _time_ms(
            partial(_step, method, model, optimizer, x, y, indices), steps, warmup, device
        )
        loss_ms = _time_ms(partial(_step, method, stub, None, x, y, indices), steps, warmup, device)
        calls = steps + warmup
        rows.append(
            BenchRow(
                name,
                stub.calls // calls,
                stub.samples / (calls * batch_size),
                step_ms,
                loss_ms,
                step_ms - loss_ms,
            )
        )
    return rows


def _step(
    method: Method,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
) -> None:
    model.zero_grad(set_to_none=True)
    training_loss(method, model, x, y, indices).total.backward()
    if optimizer is not None:
        optimizer.step()


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


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Inputs, labels and the samples' positions in the training split."""


class _Cycle:
    """Endless batches: a new epoch from ``epoch()`` whenever one ends."""

    def __init__(self, epoch: Callable[[], Iterator[Batch]]) -> None:
        self.epoch = epoch
        self.iterator = epoch()

    def next(self) -> Batch:
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = self.epoch()
            return next(self.iterator)


class _Take:
    """The next ``steps`` batches of a :class:`_Cycle`, as an epoch the trainer can loop over
    (like :class:`~calibench.data.DeviceLoader`: ``len``, ``indexed()`` and plain iteration)."""

    def __init__(self, cycle: _Cycle, steps: int) -> None:
        self.cycle = cycle
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def indexed(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            yield self.cycle.next()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.indexed():
            yield x, y


def bench_split(dataset: str, data_root: str | None, min_images: int, seed: int = 0):
    """The dataset's real training split when it can be read offline, else random uint8 images
    and labels of its shape (at least ``min_images``); returns (split, "real" or "synthetic")."""
    spec = DATASETS.get(dataset)
    try:
        return load_dataset(dataset, data_root or "", False, 0).train, "real"
    except CalibenchError:
        pass
    g = torch.Generator().manual_seed(seed)
    shape = (min_images, spec.in_channels, spec.image_size, spec.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    return Split(images, torch.randint(0, spec.num_classes, (min_images,), generator=g)), (
        "synthetic"
    )


@dataclass
class PathStats:
    """One path's measurements: medians over its timed blocks."""

    images_per_s: float
    step_ms: float
    block_images_per_s: list[float]
    peak_memory_bytes: int | None
    flops_per_s: float
    peak_tflops: float | None
    mfu: float | None


@dataclass
class ComparisonRow:
    """One method: calibench and the reference path, and their ratio."""

    method: str
    ratio: float
    block_ratios: list[float]
    flops_per_step: int
    calibench: PathStats
    reference: PathStats


@dataclass
class Comparison:
    """The set-up of one ``bench --against reference`` run and a row per method."""

    setup: dict[str, Any]
    rows: list[ComparisonRow] = field(default_factory=list)


def _path_stats(
    block_seconds: list[float],
    peaks: list[int | None],
    batch_size: int,
    steps: int,
    flops_per_step: int,
    peak_tflops: float | None,
) -> PathStats:
    per_block = [batch_size * steps / s for s in block_seconds]
    ips = statistics.median(per_block)
    flops_per_s = flops_per_step * ips / batch_size
    known = [p for p in peaks if p is not None]
    return PathStats(
        images_per_s=ips,
        step_ms=1000 * batch_size / ips,
        block_images_per_s=per_block,
        peak_memory_bytes=max(known) if known else None,
        flops_per_s=flops_per_s,
        peak_tflops=peak_tflops,
        mfu=flops_per_s / (1e12 * peak_tflops) if peak_tflops else None,
    )


@dataclass
class _Paths:
    """What every method's comparison shares: the set-up and both data streams."""

    dataset: Any
    backbone: str
    batch_size: int
    steps: int
    blocks: int
    device: torch.device
    precision: str
    protocol: Training
    ours: _Cycle
    theirs: _Cycle
    probe: MemoryProbe
    lead_in: int
    warmup_steps: int
    seed: int
    peaks: dict[str, float | None]
    num_train: int
    fast: FastPath


def compare_with_reference(
    methods: list[str],
    dataset: str,
    backbone: str,
    batch_size: int,
    steps: int,
    blocks: int,
    device: torch.device,
    precision: str = "fp32",
    num_workers: int | None = None,
    data_root: str | None = None,
    peak_tflops: float | None = None,
    warmup_steps: int = 3,
    seed: int = 0,
    on_row: Callable[[Comparison], None] | None = None,
    fast: FastPath | None = None,
) -> Comparison:
    """Train-step throughput of calibench's pipeline and of the reference pipeline, per method.

    Both paths start from the same weights and train the same architecture at the same batch
    size on the same device, calibench's in ``precision`` and the reference in float32. After
    ``warmup_steps`` each, they run ``blocks`` pairs of blocks, calibench then reference; each
    block is a few untimed lead-in steps (the reference loader's prefetch depth, so that batches
    made while the other path ran are not counted) and ``steps`` timed ones. ``ratio`` is the
    median over pairs of calibench's images/s over the reference's (docs/speed.md).
    calibench's path takes the fast path ``fast`` (default: what ``"auto"`` gives on
    ``device``, calibench/training/fast_path.py); the reference never does.
    ``on_row(comparison)`` is called after each method, e.g. to save partial results."""
    from calibench.bench.reference import default_num_workers, reference_loader

    precisions = typing.get_args(typing.get_type_hints(Training)["precision"])
    if precision not in precisions:
        raise CalibenchError(f"precision must be one of {', '.join(precisions)}, got {precision}.")
    if num_workers is not None and num_workers < 0:
        raise CalibenchError(f"--num-workers must be 0 or more, got {num_workers}.")
    if peak_tflops is not None and peak_tflops <= 0:
        raise CalibenchError(f"--peak-tflops must be positive, got {peak_tflops}.")
    spec = DATASETS.get(dataset)
    workers = default_num_workers() if num_workers is None else num_workers
    split, source = bench_split(dataset, data_root, 64 * batch_size, seed)
    if len(split) < batch_size:
        raise CalibenchError(
            f"batch size {batch_size} is larger than {dataset}'s training split ({len(split)} "
            "images). Lower --batch-size."
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = device_name(device)
    if peak_tflops is not None:
        peaks = {"calibench": peak_tflops, "reference": peak_tflops}
    elif device.type == "cuda":
        peaks = {
            "calibench": peak_tflops_for(name, matmul_mode(precision)),
            "reference": peak_tflops_for(name, matmul_mode("fp32")),
        }
    else:
        peaks = {"calibench": None, "reference": None}
    device_loader = DeviceLoader(
        LoaderConfig(split, spec, batch_size, device, True, torch.Generator().manual_seed(seed))
    )
    ref_loader = reference_loader(split, spec, batch_size, device, workers, seed)
    paths = _Paths(
        dataset=spec,
        backbone=backbone,
        batch_size=batch_size,
        steps=steps,
        blocks=blocks,
        device=device,
        precision=precision,
        protocol=Training(precision=precision),
        fast=resolve(Training(), device) if fast is None else fast,
        ours=_Cycle(device_loader.indexed),
        theirs=_Cycle(ref_loader.__iter__),
        probe=MemoryProbe(device),
        lead_in=2 * workers if workers > 0 else 1,
        warmup_steps=warmup_steps,
        seed=seed,
        peaks=peaks,
        num_train=len(split),
    )
    setup = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dataset": dataset,
        "backbone": backbone,
        "data": source,
        "train_images": len(split),
        "batch_size": batch_size,
        "steps_per_block": steps,
        "blocks": blocks,
        "timed_steps_per_path": steps * blocks,
        "lead_in_steps_per_block": paths.lead_in,
        "warmup_steps": warmup_steps,
        "precision": precision,
        "fast_path": paths.fast.describe(),
        "reference_precision": "fp32",
        "num_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "grad_clip": paths.protocol.grad_clip,
        "resident_data_bytes": device_loader.images.nbytes + device_loader.labels.nbytes,
        "memory_measure": paths.probe.kind,
        "peak_tflops": peaks,
        "peak_tflops_source": "--peak-tflops"
        if peak_tflops is not None
        else ("datasheet table (docs/speed.md)" if peaks["calibench"] else None),
    }
    comparison = Comparison(setup)
    for method in methods:
        comparison.rows.append(_compare_one(paths, method))
        if on_row is not None:
            on_row(comparison)
    return comparison


def _compare_one(paths: _Paths, method_name: str) -> ComparisonRow:
    from calibench.bench.reference import reference_train_step

    spec, device, protocol = paths.dataset, paths.device, paths.protocol
    torch.manual_seed(paths.seed)
    model = build_backbone(paths.backbone, spec.num_classes, spec.in_channels, spec.image_size)
    model = model.to(device)
    ref_model = copy.deepcopy(model)

    def sgd(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            m.parameters(),
            lr=protocol.lr,
            momentum=protocol.momentum,
            weight_decay=protocol.weight_decay,
        )

    def method() -> Method:
        m = get_method(method_name)
        m.seed(paths.seed)
        m.setup(TrainingSetup(paths.num_train, spec.num_classes))
        return m

    prepare_model(model, paths.fast)
    # train_one_epoch reads these fields of its first argument (a calibench.training.loop.Prepared)
    trainer = SimpleNamespace(
        model=model,
        ddp=None,
        net=training_forward(model, paths.fast),
        fast=paths.fast,
        method=method(),
        optimizer=sgd(model),
    )
    ref_method, ref_optimizer = method(), sgd(ref_model)
    ref_model.train()

    def ours_steps(n: int, net: nn.Module | None = None) -> None:
        step = trainer if net is None else SimpleNamespace(**{**vars(trainer), "net": net})
        train_one_epoch(step, _Take(paths.ours, n), protocol)  # type: ignore[arg-type]

    def theirs_steps(n: int) -> None:
        for _ in range(n):
            x, y, indices = paths.theirs.next()
            reference_train_step(
                ref_model, ref_method, ref_optimizer, x, y, indices, device, protocol.grad_clip
            )

    ours_steps(paths.warmup_steps)
    theirs_steps(paths.warmup_steps)
    flops = count_flops(partial(ours_steps, 1, model))  # the counter cannot see compiled graphs
    seconds: dict[str, list[float]] = {"calibench": [], "reference": []}
    memory: dict[str, list[int | None]] = {"calibench": [], "reference": []}
    for _ in range(paths.blocks):
        for path, run in (("calibench", ours_steps), ("reference", theirs_steps)):
            run(paths.lead_in)
            _sync(device)
            paths.probe.start()
            start = time.perf_counter()
            run(paths.steps)
            _sync(device)
            seconds[path].append(time.perf_counter() - start)
            memory[path].append(paths.probe.peak())
    a, b = (
        _path_stats(seconds[p], memory[p], paths.batch_size, paths.steps, flops, paths.peaks[p])
        for p in ("calibench", "reference")
    )
    pair_ratios = [
        tb / ta for ta, tb in zip(seconds["calibench"], seconds["reference"], strict=True)
    ]
    return ComparisonRow(method_name, statistics.median(pair_ratios), pair_ratios, flops, a, b)


def comparison_document(comparison: Comparison) -> dict[str, Any]:
    """The machine-readable form of a comparison: its set-up and one entry per method."""
    return {**comparison.setup, "methods": [asdict(row) for row in comparison.rows]}


def write_comparison(comparison: Comparison, path: Path) -> None:
    """Write :func:`comparison_document` as indented JSON to ``path`` (folders created), through
    a temporary file, so that a run stopped while writing leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(comparison_document(comparison), indent=2) + "\n")
    tmp.replace(path)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def comparison_table(comparison: Comparison):
    """A rich table of a comparison: images/s, ratio, peak memory, FLOPs and their rate."""
    from rich.table import Table

    s = comparison.setup
    cuda = s["device"].startswith("cuda")
    table = Table(
        title=f"calibench ({s['precision']}) vs reference pipeline (fp32, {s['num_workers']} "
        f"workers): {s['backbone']} on {s['data']} {s['dataset']} data, batch {s['batch_size']}, "
        f"{s['device_name']} ({s['device']}, {s['torch_threads']} threads), median of "
        f"{s['blocks']} alternating blocks of {s['steps_per_block']} steps",
        caption=f"images/s counts input images (not mixed copies). Peak memory: "
        f"{s['memory_measure']}.",
    )
    rate = "MFU" if cuda else "GFLOP/s"
    columns = (
        "method",
        "calibench img/s",
        "reference img/s",
        "calibench / reference",
        "calibench peak MiB",
        "reference peak MiB",
        "GFLOP / step",
        f"calibench {rate}",
        f"reference {rate}",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in comparison.rows:

        def speed(p: PathStats) -> str:
            if not cuda:
                return f"{p.flops_per_s / 1e9:.1f}"
            return "-" if p.mfu is None else f"{100 * p.mfu:.1f}%"

        table.add_row(
            r.method,
            f"{r.calibench.images_per_s:.0f}",
            f"{r.reference.images_per_s:.0f}",
            f"{r.ratio:.2f}x",
            _mib(r.calibench.peak_memory_bytes),
            _mib(r.reference.peak_memory_bytes),
            f"{r.flops_per_step / 1e9:.2f}",
            speed(r.calibench),
            speed(r.reference),
        )
    return table
