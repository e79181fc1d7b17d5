"""The backbone factory: registration and construction by name.

A backbone factory takes the dataset's shape and returns an ``nn.Module`` mapping
(B, in_channels, image_size, image_size) float images to (B, num_classes) logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from calibench.registry import BACKBONES

BackboneFactory = Callable[..., nn.Module]
TIMM_PREFIX = "timm/"


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register ``factory(num_classes, in_channels, image_size)`` under ``name``."""
    return BACKBONES.register(name)


def build_backbone(
    name: str, num_classes: int, in_channels: int, image_size: int, **kwargs: Any
) -> nn.Module:
    """Build backbone ``name`` for a dataset's classes, channels and image size.

    ``timm/<model>`` builds any timm model (see :mod:`calibench.models.timm_adapter`).
    """
    if name.startswith(TIMM_PREFIX):
        from calibench.models.timm_adapter import build_timm

        return build_timm(name[len(TIMM_PREFIX) :], num_classes, in_channels, image_size, **kwargs)
    factory = BACKBONES.get(name)
    return factory(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
    )


def check_backbone_name(name: str) -> None:
    """Raise a :class:`CalibenchError` listing valid names when ``name`` is unknown."""
    if name.startswith(TIMM_PREFIX):
        from calibench.models.timm_adapter import check_timm_name

        check_timm_name(name[len(TIMM_PREFIX) :])
        return
    BACKBONES.get(name)
