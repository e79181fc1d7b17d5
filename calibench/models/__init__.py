"""Backbones: one module per family, each registering its factories."""

from calibench.models import (
    densenet,  # noqa: F401
    imagenet,  # noqa: F401
    resnet,  # noqa: F401
    small,  # noqa: F401
    wrn,  # noqa: F401
)
from calibench.models.factory import (
    TIMM_PREFIX,
    build_backbone,
    check_backbone_name,
    register_backbone,
)

__all__ = ["TIMM_PREFIX", "build_backbone", "check_backbone_name", "register_backbone"]
