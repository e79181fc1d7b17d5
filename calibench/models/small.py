"""Small convolutional nets for the embedded 8x8 digits and other tiny grayscale images."""

from __future__ import annotations

from torch import nn

from calibench.models.factory import register_backbone
from calibench.models.wrn import WideResNet


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU stages (the second one strided), global average pooling, a linear head."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


@register_backbone("small_cnn")
def small_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 32) -> nn.Module:
    """:class:`SmallCNN`, the default backbone for ``digits`` (about 20k parameters at width 32)."""
    return SmallCNN(num_classes, in_channels, width)


@register_backbone("small_resnet")
def small_resnet(
    num_classes: int, in_channels: int, image_size: int, blocks: int = 1, widen: int = 1
) -> nn.Module:
    """He et al. (2016)'s CIFAR ResNet-(6n+2), n = ``blocks``, for 28x28 grayscale images.

    A 3x3 stem with 16 channels, three stages of ``blocks`` post-activation basic blocks of widths
    16/32/64 x ``widen`` (strides 1, 2, 2; 1x1 projection shortcuts), global average pooling and a
    linear head: a :class:`~calibench.models.wrn.WideResNet` of depth 6n+2. The default ResNet-8
    has 77,754 parameters at K=10 (1 input channel); it is meant for Fashion-MNIST.
    """
    return WideResNet(blocks, widen, num_classes, in_channels)
