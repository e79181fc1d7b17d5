"""The training loop: one run spec in, one result record out.

SGD with momentum and weight decay, a multi-step learning-rate schedule stepped at the END of
each epoch, gradient clipping to a global norm, and model selection by the best validation
accuracy (REFERENCE.md section 3). The method supplies the loss; everything else is identical
for every method. A checkpoint after every epoch lets an interrupted run resume exactly.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from calibench.config import RunSpec
from calibench.data import DataRequest, DatasetSpec, DeviceLoader, ImageData, default_data_root
from calibench.errors import CalibenchError
from calibench.evaluation import evaluate_logits
from calibench.method import Method, TrainingSetup, get_method, training_loss
from calibench.metrics import calibration_metrics
from calibench.models import build_backbone
from calibench.registry import DATASETS
from calibench.store import Store, save_arrays, save_torch, write_text


class RunProgress(Protocol):
    """What the trainer tells the user while it works (see :mod:`calibench.progress`)."""

    def start(self, spec: RunSpec, first_epoch: int) -> None: ...
    def epoch(self, row: dict[str, Any]) -> None: ...
    def finish(self, spec: RunSpec, metrics: dict[str, Any], seconds: float) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CalibenchError(
            "--device cuda was asked for, but no CUDA GPU is visible. Use --device auto or cpu."
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise CalibenchError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CalibenchError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise CalibenchError(
            f"device {name} does not exist: {torch.cuda.device_count()} GPU(s) are visible."
        )
    return device


@lru_cache(maxsize=4)
def load_dataset(name: str, root: str, download: bool, split_seed: int) -> ImageData:
    """Load (once per process) a registered dataset's splits."""
    request = DataRequest(Path(root) if root else default_data_root(), download, split_seed)
    return DATASETS.get(name).load(request)


@dataclass
class Prepared:
    """The objects of one run, built deterministically from its spec."""

    data: ImageData
    dataset: DatasetSpec
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    generator: torch.Generator
    device: torch.device
    ood: dict[str, ImageData]


def prepare(spec: RunSpec) -> Prepared:
    """Load the data and build model, method, optimiser, schedule and generator for ``spec``."""
    device = resolve_device(spec.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dataset = DATASETS.get(spec.dataset)
    t = spec.training
    data = load_dataset(spec.dataset, spec.data_root, spec.download, t.split_seed)
    if len(data.train) < t.batch_size:
        raise CalibenchError(
            f"batch_size {t.batch_size} is larger than {spec.dataset}'s training split "
            f"({len(data.train)} images), so no full batch could be drawn. Lower batch_size."
        )
    ood = {
        name: load_dataset(name, spec.data_root, spec.download, t.split_seed) for name in spec.ood
    }
    torch.manual_seed(spec.seed)
    extra = {"pretrained": True} if spec.training.pretrained else {}
    model = build_backbone(
        spec.backbone, dataset.num_classes, dataset.in_channels, dataset.image_size, **extra
    ).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=t.milestone_epochs(), gamma=t.lr_decay
    )
    method = get_method(spec.method, **spec.hparams)
    method.seed(spec.seed + 1)
    method.setup(TrainingSetup(len(data.train), dataset.num_classes))
    generator = torch.Generator().manual_seed(spec.seed + 2)
    return Prepared(data, dataset, model, method, optimizer, scheduler, generator, device, ood)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 mixed precision when ``precision == "bf16"``, else a disabled autocast."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class MixedPrecisionForward(nn.Module):
    """Runs the wrapped model's forward under bf16 autocast and hands back float32 logits, so
    a method's loss arithmetic always happens in float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, "bf16"):
            return self.model(x).float()


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DeviceLoader, precision: str = "fp32") -> np.ndarray:
    """Eval-mode logits of every sample of ``loader``, in order, as float32."""
    model.eval()
    with autocast(loader.images.device, precision):
        return torch.cat([model(x).float() for x, _ in loader]).cpu().numpy()


def train_one_epoch(
    p: Prepared, loader: DeviceLoader, grad_clip: float, precision: str = "fp32"
) -> dict[str, float]:
    """One pass over the training data; returns the epoch means of the loss and its terms."""
    p.model.train()
    model = MixedPrecisionForward(p.model) if precision == "bf16" else p.model
    sums: dict[str, torch.Tensor] = {}
    for x, y, indices in loader.indexed():
        out = training_loss(p.method, model, x, y, indices)
        p.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(p.model.parameters(), grad_clip)
        p.optimizer.step()
        for name, value in {"loss": out.total, **out.terms}.items():
            value = torch.as_tensor(value).detach().float()
            sums[name] = sums.get(name, 0) + value
    return {name: float(total) / len(loader) for name, total in sums.items()}


def _checkpoint(
    p: Prepared, epoch: int, best: dict[str, Any], best_weights: dict, log: list[dict]
) -> dict[str, Any]:
    cuda = p.device.type == "cuda"
    return {
        "epoch": epoch,
        "model": p.model.state_dict(),
        "optimizer": p.optimizer.state_dict(),
        "scheduler": p.scheduler.state_dict(),
        "generator": p.generator.get_state(),
        "method_rng": p.method.rng_state(),
        "method_state": p.method.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(p.device) if cuda else None,
        "best": best,
        "best_weights": best_weights,
        "log": log,
    }


def _restore(p: Prepared, state: dict[str, Any]) -> None:
    p.model.load_state_dict(state["model"])
    p.optimizer.load_state_dict(state["optimizer"])
    p.scheduler.load_state_dict(state["scheduler"])
    p.generator.set_state(state["generator"])
    p.method.set_rng_state(state["method_rng"])
    p.method.load_state_dict(state.get("method_state", {}))
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and p.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], p.device)


def _csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def train_run(
    spec: RunSpec,
    store: Store,
    progress: RunProgress | None = None,
    fresh: bool = False,
    stop_after: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Train ``spec`` (resuming from its last checkpoint unless ``fresh``), evaluate the
    best-validation model, store everything and return the metrics.

    ``stop_after(epoch)`` returning True stops after that epoch, as an interruption would
    (used by the tests of resumption)."""
    started = time.perf_counter()
    p = prepare(spec)
    if fresh:
        store.reset(spec)
    run_dir = store.begin(spec)
    t = spec.training
    train_loader = DeviceLoader(p.data.train, p.dataset, t.batch_size, p.device, True, p.generator)
    val_loader = DeviceLoader(p.data.val, p.dataset, t.eval_batch_size, p.device)
    predict = partial(predict_logits, p.model, precision=t.precision)
    save_arrays(
        run_dir / "split.npz", train_indices=p.data.train_indices, val_indices=p.data.val_indices
    )

    first_epoch, best, best_weights, log = 1, {"val_acc": -1.0, "epoch": 0}, {}, []
    if (run_dir / "last.pt").exists():
        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        _restore(p, state)
        first_epoch, best, log = state["epoch"] + 1, state["best"], state["log"]
        best_weights = state["best_weights"]
        save_torch(run_dir / "best.pt", best_weights)
    if progress:
        progress.start(spec, first_epoch)

    val_labels = p.data.val.labels.numpy()
    for epoch in range(first_epoch, t.epochs + 1):
        tick = time.perf_counter()
        lr = p.optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update(train_one_epoch(p, train_loader, t.grad_clip, t.precision))
        p.scheduler.step()
        val_logits = predict(val_loader)
        val = calibration_metrics(val_logits, val_labels, t.n_bins)
        p.method.on_epoch_end(epoch, val_logits, val_labels)
        row.update(
            val_acc=val["acc"],
            val_nll=val["nll"],
            val_ece=val["ece"],
            seconds=time.perf_counter() - tick,
        )
        log.append(row)
        if val["acc"] > best["val_acc"]:
            best = {"val_acc": val["acc"], "epoch": epoch}
            best_weights = {k: v.detach().cpu().clone() for k, v in p.model.state_dict().items()}
            save_torch(run_dir / "best.pt", best_weights)
        save_torch(run_dir / "last.pt", _checkpoint(p, epoch, best, best_weights, log))
        write_text(run_dir / "log.csv", _csv(log))
        if progress:
            progress.epoch(row)
        if stop_after and stop_after(epoch) and epoch < t.epochs:
            raise KeyboardInterrupt(f"stopped after epoch {epoch}")

    p.model.load_state_dict(best_weights)
    logits = {
        "val_logits": predict(val_loader),
        "val_labels": val_labels,
        "test_logits": predict(DeviceLoader(p.data.test, p.dataset, t.eval_batch_size, p.device)),
        "test_labels": p.data.test.labels.numpy(),
    }
    for name, ood in p.ood.items():
        logits[f"ood_{name}_logits"] = predict(
            DeviceLoader(ood.test, p.dataset, t.eval_batch_size, p.device)
        )
    save_arrays(run_dir / "logits.npz", **logits)
    metrics = evaluate_logits(logits, t.temperature_fit, t.n_bins)
    metrics.update(
        run_id=spec.run_id,
        best_epoch=best["epoch"],
        best_val_acc=best["val_acc"],
        train_seconds=time.perf_counter() - started,
        device=str(p.device),
    )
    store.finish(spec, metrics)
    if progress:
        progress.finish(spec, metrics, time.perf_counter() - started)
    return metrics
