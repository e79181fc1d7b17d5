"""The training fast path: channels-last memory layout, ``torch.compile`` and fused views.

Each is a training setting (``training.channels_last``, ``training.compile``,
``training.fuse_views``): ``true``, ``false`` or ``"auto"``, which takes the measured default of
the run's device type from :data:`DEFAULTS`. None changes what a run computes, only how: results
equal the plain path's to float tolerance (tests/test_fast_path.py), so they stay out of the run
id and the result record says which were on. docs/speed.md holds the measurements behind the
defaults and the commands that made them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from calibench.errors import CalibenchError


@dataclass(frozen=True)
class FastPath:
    """The resolved fast-path switches of one run."""

    channels_last: bool = False
    compile: bool = False
    fuse_views: bool = False

    def describe(self) -> str:
        """The switches that are on, joined by "+" ("plain" when none is)."""
        return "+".join(name for name, on in asdict(self).items() if on) or "plain"


DEFAULTS: dict[str, FastPath] = {
    "cpu": FastPath(channels_last=True),
    "cuda": FastPath(),
}
"""What ``"auto"`` means per device type (docs/speed.md, "Fast-path defaults"). CPU: channels
last, measured 1.5-1.6x faster per training step on Fashion-MNIST / small_cnn on this project's
2-core machine, with accuracy and ECE within seed noise over 130 paired runs (results/fast-path);
compile adds ~5% after 1.6-17 s of graph building per run, and fused views are slower there.
CUDA: the plain path until ``make gpu-check`` has measured the switches on a GPU (no GPU figure
exists yet)."""


def resolve(training: Any, device: torch.device) -> FastPath:
    """The fast path of a run: each of the training settings ``channels_last``, ``compile``
    and ``fuse_views`` as given, or its :data:`DEFAULTS` entry for ``device`` when ``"auto"``."""
    default = DEFAULTS.get(device.type, FastPath())
    chosen = {}
    for name in FastPath.__dataclass_fields__:
        value = getattr(training, name)
        chosen[name] = getattr(default, name) if value == "auto" else bool(value)
    return FastPath(**chosen)


def prepare_model(model: nn.Module, fast: FastPath) -> nn.Module:
    """Put the model's 4-D weights in channels-last layout when ``fast.channels_last`` (in
    place; its state dict keeps its keys and values)."""
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class ChannelsLastInput(nn.Module):
    """Hands the wrapped model its input in channels-last layout, whatever a method made of the
    batch (a mixed or indexed copy of a channels-last tensor need not be channels-last, and a
    convolution given another layout converts on every call)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def training_forward(model: nn.Module, fast: FastPath) -> nn.Module:
    """The module a training step calls: the model, behind :class:`ChannelsLastInput` when
    ``fast.channels_last``, through ``torch.compile`` when ``fast.compile``. Its parameters are
    the model's own, so the optimiser, the checkpoints and resuming are unchanged."""
    net = ChannelsLastInput(model) if fast.channels_last else model
    # torch's annotation of compile says a plain callable; for a module it returns an
    # OptimizedModule, an nn.Module (hence the ignore)
    return torch.compile(net) if fast.compile else net  # type: ignore[return-value]


def parse(text: str, device: torch.device) -> FastPath:
    """A fast path from the command line: ``auto`` (the device's defaults), ``plain`` (none) or
    a comma-separated list of the switches to turn on, e.g. ``channels_last,compile``."""
    if text == "auto":
        return DEFAULTS.get(device.type, FastPath())
    if text == "plain":
        return FastPath()
    names = [n.strip() for n in text.split(",") if n.strip()]
    valid = list(FastPath.__dataclass_fields__)
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise CalibenchError(
            f"--fast {text!r}: unknown switch {', '.join(unknown) or '(none given)'}. Use auto, "
            f"plain or a comma-separated list of {', '.join(valid)}."
        )
    return FastPath(**{n: True for n in names})
