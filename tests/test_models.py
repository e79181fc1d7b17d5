"""Backbones (calibench/models/): parameter counts against the published figures, output
shapes, timm adapter."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from calibench.errors import CalibenchError
from calibench.models import build_backbone, check_backbone_name
from calibench.models.resnet import resnet110
from calibench.models.timm_adapter import build_timm

EXACT_COUNTS = {
    ("resnet50", 10): 23_520_842,
    ("resnet110", 10): 45_864_522,
    ("wrn26_10", 10): 36_481_434,
    ("densenet121", 10): 6_956_298,
    ("resnet50_tiny", 200): 25_138_952,
}
PUBLISHED = {
    ("resnet50", 10): 23.52e6,
    ("resnet110", 10): 46.0e6,
    ("wrn26_10", 10): 36.5e6,
    ("densenet121", 10): 6.96e6,
    ("resnet50_tiny", 200): 25.14e6,
}
IMAGE_SIZE = {"resnet50_tiny": 64}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(("name", "k"), list(EXACT_COUNTS))
def test_big_backbone_count_and_shape(name: str, k: int) -> None:
    size = IMAGE_SIZE.get(name, 32)
    model = build_backbone(name, num_classes=k, in_channels=3, image_size=size)
    count = n_params(model)
    assert count == EXACT_COUNTS[name, k]
    assert abs(count - PUBLISHED[name, k]) <= 0.01 * PUBLISHED[name, k]
    assert logits(model, torch.randn(2, 3, size, size)).shape == (2, k)


def test_resnet110_is_the_calibration_papers_network() -> None:
    assert 45.5e6 <= EXACT_COUNTS["resnet110", 10] <= 46.5e6
    assert "NOT He et al." in (resnet110.__doc__ or "")


@pytest.mark.parametrize(
    ("name", "in_channels", "size"),
    [
        ("resnet50", 1, 28),
        ("wrn26_10", 1, 28),
        ("densenet121", 1, 28),
        ("densenet121", 3, 64),
        ("resnet50_tiny", 1, 64),
    ],
)
def test_big_backbone_adapts_to_dataset(name: str, in_channels: int, size: int) -> None:
    model = build_backbone(name, num_classes=7, in_channels=in_channels, image_size=size)
    assert logits(model, torch.randn(2, in_channels, size, size)).shape == (2, 7)


def test_resnet50_tiny_head_sees_8192_features() -> None:
    model = build_backbone("resnet50_tiny", num_classes=200, in_channels=3, image_size=64)
    assert model.fc.in_features == 8192


def test_init_is_kaiming_and_unit_batchnorm() -> None:
    model = build_backbone("densenet121", num_classes=10, in_channels=3, image_size=32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    stem = model.features[0]
    fan_out = stem.out_channels * stem.kernel_size[0] * stem.kernel_size[1]
    assert stem.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.15)


@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32)])
def test_small_resnet_trains_and_is_small(in_channels: int, size: int) -> None:
    model = build_backbone("small_resnet", num_classes=10, in_channels=in_channels, image_size=size)
    assert n_params(model) < 100_000
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "name", ["resnet50", "resnet110", "wrn26_10", "densenet121", "resnet50_tiny", "small_resnet"]
)
def test_names_are_registered(name: str) -> None:
    check_backbone_name(name)


def test_timm_dispatch_grayscale_32() -> None:
    model = build_backbone("timm/resnet18", num_classes=10, in_channels=1, image_size=32)
    assert logits(model, torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_timm_fixed_size_model_gets_dataset_image_size() -> None:
    model = build_timm("vit_tiny_patch16_224", num_classes=10, in_channels=3, image_size=32)
    assert logits(model, torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(CalibenchError, match=r"timm\.list_models\(\)") as info:
        build_backbone("timm/resnt18", num_classes=10, in_channels=3, image_size=32)
    assert "resnet18" in str(info.value)


def test_timm_missing_pretrained_weights_is_a_calibench_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(*args: object, **kwargs: object) -> nn.Module:
        raise FileNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(CalibenchError, match="could not be loaded"):
        build_timm("resnet18", 10, 3, 32, pretrained=True)


def test_timm_model_without_weights_is_a_calibench_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights(*args: object, **kwargs: object) -> nn.Module:
        raise RuntimeError("No pretrained weights exist for resnet18.")

    monkeypatch.setattr(timm, "create_model", no_weights)
    with pytest.raises(CalibenchError, match="has no pretrained weights"):
        build_timm("resnet18", 10, 3, 32, pretrained=True)


def test_timm_input_size_the_model_cannot_take(monkeypatch: pytest.MonkeyPatch) -> None:
    class TooSmall(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("input too small")

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: TooSmall())
    with pytest.raises(CalibenchError, match="cannot take 3x8x8"):
        build_timm("resnet18", 10, 3, 8)
