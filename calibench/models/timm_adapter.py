"""Any timm model as a calibench backbone (``--backbone timm/<name>``).

Input size: convolutional timm models (ResNets, EfficientNets, ConvNeXts, ...) end in global
pooling and take any image size as they are. Models whose pretrained config marks a fixed input
size (ViT, DeiT, Swin, BEiT, MaxViT, LeViT, ...) are built with ``img_size=image_size``, so their
patch grid and position embeddings match the dataset (timm resamples pretrained position
embeddings to the new grid). Every model is then probed with one 1 x in_channels x image_size x
image_size input; a model that cannot take that size raises a :class:`CalibenchError` telling the
user to pick another model or resize the data. The first conv takes ``in_channels`` channels
(timm adapts pretrained RGB filters to other channel counts) and the head has ``num_classes``
outputs.
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from torch import nn

from calibench.errors import CalibenchError

_MAX_SUGGESTIONS = 8


def close_timm_names(model_name: str, limit: int = _MAX_SUGGESTIONS) -> list[str]:
    """timm model names resembling ``model_name``: pattern matches first, then spelling matches."""
    base = model_name.split(".", 1)[0]
    matches = list(timm.list_models(f"*{base}*"))[:limit] if base else []
    if len(matches) < limit:
        spelled = difflib.get_close_matches(base, timm.list_models(), n=limit, cutoff=0.6)
        matches += [m for m in spelled if m not in matches][: limit - len(matches)]
    return matches


def _unknown_model_error(model_name: str) -> CalibenchError:
    close = close_timm_names(model_name)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return CalibenchError(
        f"Unknown timm model '{model_name}'.{hint} "
        "See timm.list_models() (e.g. timm.list_models('*resnet*')) for all names."
    )


def check_timm_name(model_name: str) -> None:
    """Raise a :class:`CalibenchError` with close matches unless timm knows ``model_name``."""
    if not model_name or not timm.is_model(model_name):
        raise _unknown_model_error(model_name)


def _has_fixed_input_size(model_name: str) -> bool:
    cfg = timm.models.get_pretrained_cfg(model_name)
    return bool(cfg is not None and cfg.fixed_input_size)


def _create(model_name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        if "No pretrained weights exist" in str(exc):
            raise CalibenchError(
                f"timm model '{model_name}' has no pretrained weights; run without pretrained "
                "weights or pick a model name with a pretrained tag (see timm.list_pretrained())."
            ) from exc
        raise CalibenchError(
            f"Pretrained weights for timm model '{model_name}' could not be loaded: they are not "
            "in the local cache (Hugging Face hub / torch hub) and could not be downloaded "
            f"({type(exc).__name__}: {exc}). Run without pretrained weights, or download them "
            "on a machine with network access into the same cache (HF_HOME / TORCH_HOME) first."
        ) from exc


def _check_input_size(model: nn.Module, model_name: str, in_channels: int, image_size: int) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise CalibenchError(
            f"timm model '{model_name}' cannot take {in_channels}x{image_size}x{image_size} "
            f"inputs ({type(exc).__name__}: {exc}). Choose another model or resize the images."
        ) from exc
    finally:
        model.train(was_training)


def build_timm(
    model_name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build timm model ``model_name`` for a dataset's classes, channels and image size.

    See the module docstring for how the input size is handled.

    ``pretrained=True`` loads timm's pretrained weights, which must be downloadable or already
    cached; otherwise a :class:`CalibenchError` says so (set ``HF_HUB_OFFLINE=1`` to skip the
    hub's download retries on a machine without network). Extra ``kwargs`` go to
    ``timm.create_model``. An unknown name raises a :class:`CalibenchError` listing close matches.
    """
    check_timm_name(model_name)
    kwargs = {"num_classes": num_classes, "in_chans": in_channels, **kwargs}
    if _has_fixed_input_size(model_name) and "img_size" not in kwargs:
        try:
            model = _create(model_name, pretrained, img_size=image_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            model = _create(model_name, pretrained, **kwargs)
    else:
        model = _create(model_name, pretrained, **kwargs)
    _check_input_size(model, model_name, in_channels, image_size)
    return model
