"""Several views of one batch through a model: separate forward passes, or one fused pass.

Multi-view methods (RankMixup: the raw batch and its mixed copies) pass each view through the
model on its own, so every BatchNorm layer normalises each view with that view's statistics and
updates its running statistics once per view, in order (the reference code's semantics, and
calibench's). :func:`forward_views` keeps these semantics exactly and lets the trainer choose how
they are computed (``training.fuse_views``, docs/speed.md, "Fused views"):

- separate: one forward pass per view, the reference;
- fused: one forward pass over the concatenated views, in which every BatchNorm layer in training
  mode splits its input back into the views and normalises each with its own batch statistics,
  updating its running statistics view after view. Convolutions and linear layers see one large
  batch (fewer, larger kernels); outputs, gradients and running statistics equal the separate
  passes' to float tolerance (tests/test_views.py).

Layers that draw random numbers (dropout, stochastic depth) draw them in a different order when
fused; no calibench backbone has one. SyncBatchNorm needs a collective per view, so a model with
one always runs separate passes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from functools import partial

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_FUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("calibench_fuse_views", default=False)


@contextlib.contextmanager
def view_batching(fused: bool) -> Iterator[None]:
    """Within this block, :func:`forward_views` runs views fused (``True``) or separately."""
    token = _FUSED.set(fused)
    try:
        yield
    finally:
        _FUSED.reset(token)


def _per_view(bn: nn.Module, sizes: list[int], x: torch.Tensor) -> torch.Tensor:
    return torch.cat([type(bn).forward(bn, chunk) for chunk in x.split(sizes)])


@contextlib.contextmanager
def per_view_batch_norm(model: nn.Module, sizes: Sequence[int]) -> Iterator[None]:
    """Within this block, every BatchNorm layer of ``model`` in training mode treats its input
    as the concatenation of views of ``sizes`` samples and runs its own forward on each view in
    turn: per-view batch statistics, and one running-statistics update per view."""
    # seen as nn.Module, whose forward is a declared attribute that an instance may replace
    layers: list[nn.Module] = [
        m for m in model.modules() if isinstance(m, _BatchNorm) and m.training
    ]
    for bn in layers:
        bn.forward = partial(_per_view, bn, list(sizes))
    try:
        yield
    finally:
        for bn in layers:
            del bn.forward


def forward_views(model: nn.Module, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The model's output for each view, exactly as ``[model(v) for v in views]`` defines it
    (separate passes, in order; see the module docstring). Under ``view_batching(True)`` the
    views go through one pass with per-view BatchNorm statistics instead."""
    fused = _FUSED.get() and len(views) > 1
    if not fused or any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return [model(v) for v in views]
    sizes = [len(v) for v in views]
    with per_view_batch_norm(model, sizes):
        out = model(torch.cat(list(views)))
    return list(out.split(sizes))
