"""Bottleneck ResNets for small images (He et al. 2016), as the calibration papers use them.

The CIFAR variant replaces ImageNet's 7x7 stride-2 stem and max-pool by one 3x3 stride-1 conv,
keeps the four bottleneck stages (widths 64, 128, 256, 512, expansion 4, strides 1, 2, 2, 2) and
ends with adaptive average pooling and a linear head, so 28x28, 32x32 and 64x64 inputs all work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from calibench.models.factory import register_backbone


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal conv weights (fan-out, ReLU gain; He et al. 2015), BatchNorm weight 1, bias 0.

    Linear layers keep PyTorch's default initialisation.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The residual shortcut: identity, or a 1x1 conv + BN projection when the stride or the
    width changes (He et al. 2016, option B)."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class ResidualBlock(nn.Module):
    """relu(residual(x) + shortcut(x)): the post-activation sum shared by the ResNet bottleneck
    and the WRN basic block, which differ only in their ``residual`` branch."""

    def __init__(self, residual: nn.Module, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.residual = residual
        self.shortcut = shortcut(in_planes, out_planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, each conv followed by BN; ReLU after the sum.

    The projection shortcut (1x1 conv + BN) is used when the stride or the width changes
    (He et al. 2016, option B).
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        out_planes = planes * self.expansion
        residual = nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )
        super().__init__(residual, in_planes, out_planes, stride)


class CifarResNet(nn.Module):
    """Bottleneck ResNet with a 3x3 stride-1 stem and no max-pool (He et al. 2016, CIFAR form).

    ``blocks`` gives the number of bottlenecks per stage; ``pool_size`` the side of the final
    adaptive average pool, so the head sees ``2048 * pool_size**2`` features.
    """

    widths = (64, 128, 256, 512)
    strides = (1, 2, 2, 2)

    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        if len(blocks) != len(self.widths):
            raise ValueError(f"need {len(self.widths)} stage sizes, got {list(blocks)}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_planes = 64
        for n, width, stride in zip(blocks, self.widths, self.strides, strict=True):
            layers = []
            for i in range(n):
                layers.append(Bottleneck(in_planes, width, stride if i == 0 else 1))
                in_planes = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = nn.Linear(in_planes * pool_size * pool_size, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register_backbone("resnet50")
def resnet50(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """CIFAR ResNet-50 (He et al. 2016): bottlenecks [3, 4, 6, 3]; 23,520,842 parameters at K=10."""
    return CifarResNet([3, 4, 6, 3], num_classes, in_channels)


@register_backbone("resnet110")
def resnet110(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-110 as the calibration papers define it: CIFAR bottleneck ResNet [3, 4, 26, 3].

    This is the network of focal_calibration (Mukhoti et al. 2020), MbLS (Liu et al. 2022) and
    RankMixup (Noh et al. 2023), with 45,864,522 parameters at K=10. It is NOT He et al. (2016)'s
    CIFAR ResNet-110 (54 basic blocks, widths 16/32/64, about 1.7M parameters); results are only
    comparable with papers that use this larger network.
    """
    return CifarResNet([3, 4, 26, 3], num_classes, in_channels)


@register_backbone("resnet50_tiny")
def resnet50_tiny(num_classes: int, in_channels: int = 3, image_size: int = 64) -> nn.Module:
    """Tiny-ImageNet ResNet-50 of the calibration papers (He et al. 2016, CIFAR stem).

    Same as ``resnet50`` but with a 2x2 adaptive average pool and a linear head on 8192 features;
    25,138,952 parameters at K=200.
    """
    return CifarResNet([3, 4, 6, 3], num_classes, in_channels, pool_size=2)
