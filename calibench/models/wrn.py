"""Wide residual networks (Zagoruyko & Komodakis 2016) in the calibration papers' form."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from calibench.models.factory import register_backbone
from calibench.models.resnet import ResidualBlock, init_weights


class WideBasicBlock(ResidualBlock):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, add the shortcut, then ReLU.

    The shortcut is a 1x1 conv + BN when the stride or the width changes, else the identity.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        residual = nn.Sequential(
            nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )
        super().__init__(residual, in_planes, planes, stride)


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko & Komodakis 2016) with post-activation basic blocks, no dropout.

    A 3x3 stem conv with 16 channels (+ BN + ReLU), three stages of ``blocks_per_stage``
    :class:`WideBasicBlock` of widths ``16 * widen`` x (1, 2, 4) and strides 1, 2, 2, adaptive
    average pooling to 1x1 (the 8x8 pool at 32x32 inputs) and a linear head.
    """

    def __init__(
        self,
        blocks_per_stage: int,
        widen: int,
        num_classes: int,
        in_channels: int = 3,
        base_widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_planes = 16
        for base, stride in zip(base_widths, (1, 2, 2), strict=True):
            width = base * widen
            layers = []
            for i in range(blocks_per_stage):
                layers.append(WideBasicBlock(in_planes, width, stride if i == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register_backbone("wrn26_10")
def wrn26_10(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Wide-ResNet-26-10 of the calibration papers (Zagoruyko & Komodakis 2016).

    Four post-activation basic blocks per stage, widths 160/320/640, 1x1 conv + BN projection
    shortcuts at the three width changes, no dropout: 36,481,434 parameters at K=10, the 36.5M the
    papers report. "26" is the papers' name (stem conv + 24 block convs + linear head); the same
    stage layout and count is Zagoruyko & Komodakis's WRN-28-10 (depth 6n + 4, n = 4). Three
    blocks per stage would give 26.8M.
    """
    return WideResNet(4, 10, num_classes, in_channels)
