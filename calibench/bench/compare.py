"""calibench's training pipeline against the reference pipeline (``bench --against reference``).

:func:`compare_with_reference` times calibench's training step (the device-resident loader and
:func:`calibench.training.loop.train_one_epoch`) beside the official RankMixup code's pipeline
(:mod:`calibench.bench.reference`) in alternating blocks in one process, with throughput in
input images per second, peak memory and FLOPs per step (docs/speed.md).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import statistics
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from calibench.bench.measure import (
    MemoryProbe,
    count_flops,
    device_name,
    matmul_mode,
    peak_tflops_for,
    sync,
)
from calibench.data import DeviceLoader, LoaderConfig, load_dataset
from calibench.data.base import Split
from calibench.errors import CalibenchError
from calibench.method import Method, TrainingSetup, get_method
from calibench.models import build_backbone
from calibench.registry import DATASETS
from calibench.spec import Precision, Training
from calibench.training.fast_path import FastPath, prepare_model, resolve, training_forward
from calibench.training.loop import train_one_epoch

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
class _Setting:
    """What the caller asks for: the dataset's spec, backbone, batch size, timed steps per
    block, block pairs, device and calibench's precision."""

    dataset: Any
    backbone: str
    batch_size: int
    steps: int
    blocks: int
    device: torch.device
    precision: Precision


@dataclass
class _Paths(_Setting):
    """What every method's comparison shares: the setting and both data streams."""

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


def _make_paths(
    setting: _Setting,
    split: Split,
    workers: int,
    peaks: dict[str, float | None],
    warmup_steps: int,
    seed: int,
    fast: FastPath | None,
) -> tuple[_Paths, int]:
    """Both data streams over ``split`` (calibench's device-resident loader, the reference's
    DataLoader with ``workers``), the memory probe and the rest of the set-up; and the bytes
    the device-resident loader holds."""
    from calibench.bench.reference import reference_loader

    spec, device, batch_size = setting.dataset, setting.device, setting.batch_size
    generator = torch.Generator().manual_seed(seed)
    device_loader = DeviceLoader(LoaderConfig(split, spec, batch_size, device, True, generator))
    ref_loader = reference_loader(split, spec, batch_size, device, workers, seed)
    paths = _Paths(
        **vars(setting),
        protocol=Training(precision=setting.precision),
        ours=_Cycle(device_loader.indexed),
        theirs=_Cycle(ref_loader.__iter__),
        probe=MemoryProbe(device),
        lead_in=2 * workers if workers > 0 else 1,
        warmup_steps=warmup_steps,
        seed=seed,
        peaks=peaks,
        num_train=len(split),
        fast=resolve(Training(), device) if fast is None else fast,
    )
    return paths, device_loader.images.nbytes + device_loader.labels.nbytes


def _check_options(precision: str, num_workers: int | None, peak_tflops: float | None) -> None:
    precisions = typing.get_args(typing.get_type_hints(Training)["precision"])
    if precision not in precisions:
        raise CalibenchError(f"precision must be one of {', '.join(precisions)}, got {precision}.")
    if num_workers is not None and num_workers < 0:
        raise CalibenchError(f"--num-workers must be 0 or more, got {num_workers}.")
    if peak_tflops is not None and peak_tflops <= 0:
        raise CalibenchError(f"--peak-tflops must be positive, got {peak_tflops}.")


def _peaks(
    name: str, device: torch.device, precision: str, peak_tflops: float | None
) -> dict[str, float | None]:
    """Each path's peak TFLOP/s: ``--peak-tflops`` for both, else the datasheet table (CUDA;
    calibench in its precision, the reference in float32), else none (CPU)."""
    if peak_tflops is not None:
        return {"calibench": peak_tflops, "reference": peak_tflops}
    if device.type == "cuda":
        return {
            "calibench": peak_tflops_for(name, matmul_mode(precision)),
            "reference": peak_tflops_for(name, matmul_mode("fp32")),
        }
    return {"calibench": None, "reference": None}


def compare_with_reference(
    methods: list[str],
    dataset: str,
    backbone: str,
    batch_size: int,
    steps: int,
    blocks: int,
    device: torch.device,
    precision: Precision = "fp32",
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
    from calibench.bench.reference import default_num_workers

    _check_options(precision, num_workers, peak_tflops)
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
    paths, resident = _make_paths(
        _Setting(spec, backbone, batch_size, steps, blocks, device, precision),
        split,
        workers,
        _peaks(name, device, precision, peak_tflops),
        warmup_steps,
        seed,
        fast,
    )
    comparison = Comparison(_setup(paths, dataset, name, source, workers, resident, peak_tflops))
    for method in methods:
        comparison.rows.append(_compare_one(paths, method))
        if on_row is not None:
            on_row(comparison)
    return comparison


def _setup(
    paths: _Paths,
    dataset: str,
    name: str,
    source: str,
    workers: int,
    resident_bytes: int,
    peak_tflops: float | None,
) -> dict[str, Any]:
    """The comparison's set-up as its JSON document records it."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(paths.device),
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dataset": dataset,
        "backbone": paths.backbone,
        "data": source,
        "train_images": paths.num_train,
        "batch_size": paths.batch_size,
        "steps_per_block": paths.steps,
        "blocks": paths.blocks,
        "timed_steps_per_path": paths.steps * paths.blocks,
        "lead_in_steps_per_block": paths.lead_in,
        "warmup_steps": paths.warmup_steps,
        "precision": paths.precision,
        "fast_path": paths.fast.describe(),
        "reference_precision": "fp32",
        "num_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "grad_clip": paths.protocol.grad_clip,
        "resident_data_bytes": resident_bytes,
        "memory_measure": paths.probe.kind,
        "peak_tflops": paths.peaks,
        "peak_tflops_source": "--peak-tflops"
        if peak_tflops is not None
        else ("datasheet table (docs/speed.md)" if paths.peaks["calibench"] else None),
    }


def _sgd(model: nn.Module, protocol: Training) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=protocol.lr,
        momentum=protocol.momentum,
        weight_decay=protocol.weight_decay,
    )


def _method(paths: _Paths, name: str) -> Method:
    method = get_method(name)
    method.seed(paths.seed)
    method.setup(TrainingSetup(paths.num_train, paths.dataset.num_classes))
    return method


def _step_runners(
    paths: _Paths, method_name: str
) -> tuple[Callable[..., None], Callable[[int], None], nn.Module]:
    """Both paths from the same initial weights: a function that trains ``n`` steps of
    calibench's path (through ``net`` when given, else its training forward), one that trains
    ``n`` steps of the reference path, and calibench's model."""
    from calibench.bench.reference import reference_train_step

    spec, device, protocol = paths.dataset, paths.device, paths.protocol
    torch.manual_seed(paths.seed)
    model = build_backbone(paths.backbone, spec.num_classes, spec.in_channels, spec.image_size)
    model = model.to(device)
    ref_model = copy.deepcopy(model)
    prepare_model(model, paths.fast)
    forward = training_forward(model, paths.fast)
    method, optimizer = _method(paths, method_name), _sgd(model, protocol)
    ref_method, ref_optimizer = _method(paths, method_name), _sgd(ref_model, protocol)
    ref_model.train()

    def ours(n: int, net: nn.Module | None = None) -> None:
        batches = _Take(paths.ours, n)
        net = forward if net is None else net
        train_one_epoch(net, model, method, optimizer, batches, protocol, paths.fast.fuse_views)

    def theirs(n: int) -> None:
        for _ in range(n):
            x, y, indices = paths.theirs.next()
            reference_train_step(
                ref_model, ref_method, ref_optimizer, x, y, indices, device, protocol.grad_clip
            )

    return ours, theirs, model


def _compare_one(paths: _Paths, method_name: str) -> ComparisonRow:
    ours, theirs, model = _step_runners(paths, method_name)
    ours(paths.warmup_steps)
    theirs(paths.warmup_steps)
    flops = count_flops(partial(ours, 1, model))  # the counter cannot see compiled graphs
    seconds: dict[str, list[float]] = {"calibench": [], "reference": []}
    memory: dict[str, list[int | None]] = {"calibench": [], "reference": []}
    for _ in range(paths.blocks):
        for path, run in (("calibench", ours), ("reference", theirs)):
            run(paths.lead_in)
            sync(paths.device)
            paths.probe.start()
            start = time.perf_counter()
            run(paths.steps)
            sync(paths.device)
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
