"""Training-step speed: each method's own cost beside the model's (``calibench bench``).

:func:`bench_methods` times each method's ``loss`` twice, once with the real model (the whole
training step) and once with :class:`CachedLogits`, a stand-in model that returns fixed logits,
so that only the method's own work (mixing, losses, their backward) is left (docs/speed.md).
The comparison with the reference pipeline is :mod:`calibench.bench.compare`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from calibench.bench.measure import sync
from calibench.method import Method, TrainingSetup, get_method, training_loss
from calibench.models import build_backbone
from calibench.registry import DATASETS


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
    """One method's median milliseconds per step: the whole step, its loss work alone and the
    rest (the model's passes and the optimiser), with the model calls per step and the images
    they carry per input image."""

    method: str
    forward_passes: int
    samples_per_input: float
    step_ms: float
    loss_ms: float
    model_ms: float


def _time_ms(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` over ``steps`` synchronised calls, after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
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
