"""DenseNet-BC for small images (Huang et al. 2017), as the calibration papers use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from calibench.models.factory import register_backbone
from calibench.models.resnet import init_weights


class DenseLayer(nn.Module):
    """Bottleneck dense layer: BN-ReLU-1x1 conv to ``4 * growth``, BN-ReLU-3x3 conv to ``growth``.

    Its output is concatenated to its input along channels (Huang et al. 2017, DenseNet-B).
    """

    def __init__(self, in_planes: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        inner = bottleneck * growth
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compressing channels) then 2x2 average pooling (Huang et al. 2017)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, out_planes, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017) with a 3x3 stride-1 stem and no stem pooling.

    Dense blocks of ``blocks`` bottleneck layers with growth rate ``growth``, transitions that
    keep ``compression`` of the channels, then BN-ReLU, global average pooling and a linear head.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        growth: int = 32,
        compression: float = 0.5,
        stem_channels: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)]
        planes = stem_channels
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(planes, growth))
                planes += growth
            if i < len(blocks) - 1:
                out_planes = int(planes * compression)
                layers.append(Transition(planes, out_planes))
                planes = out_planes
        layers += [
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_backbone("densenet121")
def densenet121(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """CIFAR DenseNet-121 (Huang et al. 2017): DenseNet-BC [6, 12, 24, 16], growth 32.

    Compression 0.5, 3x3 stem with 64 channels and no stem pooling: 6,956,298 parameters at K=10.
    """
    return DenseNet([6, 12, 24, 16], num_classes, in_channels)
