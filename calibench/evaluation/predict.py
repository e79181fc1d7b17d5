"""Logits of a model: eval mode, inference mode, in batches, in the run's precision. The one
place that turns a model and a loader into logits, for training's validation and final pass,
dataset shift and the report's diagnostics."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from calibench.data import Loader
from calibench.device import autocast


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: Loader, precision: str = "fp32") -> np.ndarray:
    """Eval-mode logits of every sample of ``loader``, in order, as float32, under inference
    mode (no autograd records) and in batches of ``eval_batch_size``."""
    model.eval()
    with autocast(loader.device, precision):
        return torch.cat([model(x).float() for x, _ in loader]).cpu().numpy()
