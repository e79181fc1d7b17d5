"""ImageNet backbones (224x224 inputs), reused from timm rather than written again."""

from __future__ import annotations

from typing import Any

from torch import nn

from calibench.models.factory import register_backbone


@register_backbone("resnet50_imagenet")
def resnet50_imagenet(
    num_classes: int, in_channels: int = 3, image_size: int = 224, **kwargs: Any
) -> nn.Module:
    """ImageNet ResNet-50 (He et al. 2016) as torchvision builds it: 7x7 stride-2 stem with
    max-pool, bottlenecks [3, 4, 6, 3] striding in the 3x3 conv, global average pool, linear
    head; 25,557,032 parameters at K=1000 and torchvision's state-dict names.

    Built by timm (``timm/resnet50``, no weights unless ``pretrained=True``), whose
    initialisation zeroes the last BatchNorm scale of every block (the "zero gamma" of Goyal et
    al. 2017); the same network as ``--backbones timm/resnet50``, under a name of its own."""
    from calibench.models.timm_adapter import build_timm

    return build_timm("resnet50", num_classes, in_channels, image_size, **kwargs)
