"""The training loop: one claimed run in, one result (metrics and logits) out.

SGD with momentum and weight decay, a multi-step learning-rate schedule stepped at the END of
each epoch, gradient clipping to a global norm, and model selection by the best validation
accuracy (docs/protocol.md, "Training"). The method supplies the loss; everything else is
identical for every method. A checkpoint after every epoch (the two newest are kept, written
through the claim's fenced folder) lets an interrupted run resume exactly. A non-finite loss or
parameter, or an error inside the method (an OSError of its own included), raises
:class:`RunFailed` with the reason and the epoch; only a failed write of the results folder
(:class:`~calibench.store.files.StorageError`) stops the command.

One run can train over several processes (calibench/training/distributed.py,
docs/imagenet.md): every rank trains its shard of each global batch through
DistributedDataParallel; rank 0 alone evaluates (on the full splits, with the unwrapped
model) and writes to the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from calibench.data import (
    DatasetSpec,
    ImageData,
    Loader,
    LoaderConfig,
    load_dataset,
    make_loader,
    spec_for,
)
from calibench.device import autocast, resolve_device
from calibench.errors import CalibenchError
from calibench.evaluation.metrics import calibration_metrics
from calibench.evaluation.predict import predict_logits
from calibench.evaluation.record import evaluate_logits
from calibench.method import Loss, Method, TrainingSetup, get_method, training_loss
from calibench.models import build_backbone
from calibench.spec import RunSpec, Training
from calibench.store.files import RunDir
from calibench.store.index import Claim
from calibench.training import distributed, fast_path
from calibench.training.checkpoints import History, resume, save_checkpoint, write_log
from calibench.views import view_batching


class RunProgress(Protocol):
    """What the trainer and the executors tell the user (see :mod:`calibench.cli.display`):
    a run starts (at ``first_epoch`` when resumed), each training step of an epoch is done
    (``batch``: the epoch's ``total`` steps, the ``step`` just done and the input images it
    trained over all ranks), each epoch ends with its log row, and the run finishes, fails or is
    skipped."""

    def start(self, spec: RunSpec, first_epoch: int) -> None: ...
    def batch(self, total: int, step: int, images: int) -> None: ...
    def epoch(self, row: dict[str, Any]) -> None: ...
    def finish(self, spec: RunSpec, metrics: dict[str, Any], seconds: float) -> None: ...
    def skip(self, spec: RunSpec, reason: str) -> None: ...
    def fail(self, spec: RunSpec, reason: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def abort(self) -> None: ...


class EpochBatches(Protocol):
    """What :func:`train_one_epoch` loops over: a :class:`Loader`, or any other source of
    batches with their training-split positions and a number of batches (the benchmark's)."""

    def __len__(self) -> int: ...
    def indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...


class RunFailed(Exception):
    """A run that cannot go on: a non-finite loss or parameter, or an error in its method."""

    details: str | None = None
    """The traceback of an unexpected error behind the failure, kept in the run's error.txt."""

    def __init__(self, reason: str, epoch: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch


FINITE_CHECK_EVERY = 50
"""Steps between checks that the running loss is finite (each check is one device sync)."""


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
    ddp: nn.Module | None = None
    """The DistributedDataParallel wrapper that trains ``model`` in a multi-process run."""
    fast: fast_path.FastPath = field(default_factory=fast_path.FastPath)
    net: nn.Module | None = None
    """What a training step calls: ``model`` or ``ddp``, compiled when ``fast.compile``."""


def prepare(spec: RunSpec) -> Prepared:
    """Load the data and build model, method, optimiser, schedule and generator for ``spec``
    (in a multi-process run: this rank's device, the DDP wrapper, this rank's method seed)."""
    device = distributed.local_device(resolve_device(spec.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t = spec.training
    data = load_dataset(spec.dataset, spec.data_root, spec.download, t.split_seed)
    dataset = spec_for(spec.dataset, data)
    if len(data.train) < t.batch_size:
        raise CalibenchError(
            f"batch_size {t.batch_size} is larger than {spec.dataset}'s training split "
            f"({len(data.train)} images), so no full batch could be drawn. Lower batch_size."
        )
    distributed.local_batch_size(t.batch_size, distributed.world_size())
    ood = {
        name: load_dataset(name, spec.data_root, spec.download, t.split_seed) for name in spec.ood
    }
    torch.manual_seed(spec.seed)
    extra = {"pretrained": True} if spec.training.pretrained else {}
    model = build_backbone(
        spec.backbone, dataset.num_classes, dataset.in_channels, dataset.image_size, **extra
    ).to(device)
    fast = fast_path.resolve(t, device)
    fast_path.prepare_model(model, fast)
    ddp = distributed.wrap_model(model, device, t.sync_bn)
    model = ddp.module if ddp is not None else model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=t.milestone_epochs(), gamma=t.lr_decay
    )
    method = get_method(spec.method, **spec.hparams)
    rank = distributed.rank()
    method.seed(distributed.method_seed(spec.seed + 1, rank))
    method.setup(TrainingSetup(len(data.train), dataset.num_classes, distributed.sum_collective()))
    generator = torch.Generator().manual_seed(spec.seed + 2)
    if rank > 0:
        torch.manual_seed(distributed.method_seed(spec.seed, rank))
    net = fast_path.training_forward(ddp if ddp is not None else model, fast)
    return Prepared(
        data, dataset, model, method, optimizer, scheduler, generator, device, ood, ddp, fast, net
    )


def _check_loss(out: Any, method: Method) -> Loss:
    if not isinstance(out, Loss):
        raise RunFailed(
            f"method {method.name}: loss() returned {type(out).__name__}, not calibench.Loss"
        )
    if not isinstance(out.total, torch.Tensor) or out.total.ndim != 0:
        shape = tuple(out.total.shape) if isinstance(out.total, torch.Tensor) else out.total
        raise RunFailed(f"method {method.name}: Loss.total must be a scalar tensor, got {shape}")
    return out


def _check_finite(value: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(value)):
        raise RunFailed(f"non-finite {what} ({float(value)}): training diverged")


class MixedPrecisionForward(nn.Module):
    """Runs the wrapped model's forward under bf16 autocast and hands back float32 logits, so
    a method's loss arithmetic always happens in float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, "bf16"):
            return self.model(x).float()


def train_one_epoch(
    net: nn.Module,
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    loader: EpochBatches,
    t: Training,
    fuse_views: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``: each batch's loss from ``method`` through ``net`` (what a step
    calls: the model itself, its DistributedDataParallel wrapper or its compiled form), an
    optimiser step with ``t.grad_clip`` applied to ``model``'s parameters, under
    ``t.precision``, with the views of a multi-view method fused when ``fuse_views``.
    ``on_batch(step, images)`` is told after every step (``images``: the step's input images
    over all the ranks of the run). Returns the epoch means of the loss and its terms (averaged
    over the ranks of a multi-process run). The running loss is checked every
    :data:`FINITE_CHECK_EVERY` steps and the parameters at the end; a non-finite value raises
    :class:`RunFailed` (on every rank: the checks use the loss averaged over the ranks)."""
    net.train()
    forward = MixedPrecisionForward(net) if t.precision == "bf16" else net
    ranks = distributed.world_size()
    sums: dict[str, torch.Tensor] = {}
    for step, (x, y, indices) in enumerate(loader.indexed(), 1):
        with view_batching(fuse_views):
            out = _check_loss(training_loss(method, forward, x, y, indices), method)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        for name, value in {"loss": out.total, **out.terms}.items():
            value = torch.as_tensor(value).detach().float()
            sums[name] = sums.get(name, 0) + value
        if step % FINITE_CHECK_EVERY == 0:
            _check_finite(distributed.all_reduce_mean([sums["loss"]])[0], "training loss")
        if on_batch is not None:
            on_batch(step, x.shape[0] * ranks)
    sums = dict(zip(sums, distributed.all_reduce_mean(list(sums.values())), strict=True))
    _check_finite(sums["loss"], "training loss")
    _check_finite(nn.utils.get_total_norm(model.parameters()), "parameter norm")
    return {name: float(total) / len(loader) for name, total in sums.items()}


@dataclass
class Loaders:
    train: Loader
    val: Loader
    test: Loader
    ood: dict[str, Loader]


def make_loaders(p: Prepared, t: Any) -> Loaders:
    """Each split's loader (device-resident or streamed, as its dataset asks); the training
    loader yields this rank's shard of every global batch, the others every sample."""

    def evaluation(split: Any) -> Loader:
        return make_loader(LoaderConfig(split, p.dataset, t.eval_batch_size, p.device))

    rank, world = distributed.rank(), distributed.world_size()
    return Loaders(
        train=make_loader(
            LoaderConfig(
                p.data.train, p.dataset, t.batch_size, p.device, True, p.generator, rank, world
            )
        ),
        val=evaluation(p.data.val),
        test=evaluation(p.data.test),
        ood={name: evaluation(data.test) for name, data in p.ood.items()},
    )


def validate(
    p: Prepared, loader: Loader, labels: np.ndarray, t: Any
) -> tuple[dict[str, Any], np.ndarray]:
    """Calibration metrics and logits of the current weights on the validation split: rank 0
    evaluates the whole split alone and every rank receives both (the logits feed a method's
    end-of-epoch hook); non-finite logits raise :class:`RunFailed` on every rank."""
    val, logits = None, None
    if distributed.is_main():
        logits = predict_logits(p.model, loader, t.precision)
        if np.isfinite(logits).all():
            val = calibration_metrics(logits, labels, t.n_bins)
    val, logits = distributed.broadcast_object((val, logits))
    if val is None or logits is None:  # rank 0 computes val from finite logits only
        raise RunFailed("non-finite validation logits: training diverged")
    return val, logits


def run_epochs(
    p: Prepared,
    loaders: Loaders,
    history: History,
    t: Any,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Train from the epoch after ``history.epoch`` to the last, validating after each; yields
    each epoch's log row once ``history`` holds it (``on_batch`` as in
    :func:`train_one_epoch`). Errors inside an epoch raise :class:`RunFailed` naming the
    epoch."""
    val_labels = p.data.val.labels.numpy()
    net = next(m for m in (p.net, p.ddp, p.model) if m is not None)
    train_epoch = partial(train_one_epoch, net, p.model, p.method, p.optimizer, loaders.train, t)
    for epoch in range(history.epoch + 1, t.epochs + 1):
        tick = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": p.optimizer.param_groups[0]["lr"]}
        try:
            row.update(train_epoch(p.fast.fuse_views, on_batch))
            p.scheduler.step()
            val, val_logits = validate(p, loaders.val, val_labels, t)
            p.method.on_epoch_end(epoch, val_logits, val_labels)
        except RunFailed as exc:
            raise RunFailed(exc.reason, epoch) from None
        except (KeyboardInterrupt, CalibenchError):
            raise
        except Exception as exc:
            raise RunFailed(f"{type(exc).__name__}: {exc}", epoch) from exc
        row.update(
            val_acc=val["acc"],
            val_nll=val["nll"],
            val_ece=val["ece"],
            seconds=time.perf_counter() - tick,
        )
        history.record(row, p.model)
        yield row


def final_logits(p: Prepared, loaders: Loaders, history: History, t: Any) -> dict[str, np.ndarray]:
    """Validation, test and OOD logits of the best-validation weights, computed in the plain
    memory layout whatever the fast path, so that they equal what a plain model loaded from
    ``best.pt`` gives (as ``calibench evaluate --shift`` and other tools load it)."""
    p.model.load_state_dict(history.best_weights)
    p.model.to(memory_format=torch.contiguous_format)
    predict = partial(predict_logits, p.model, precision=t.precision)
    logits = {
        "val_logits": predict(loaders.val),
        "val_labels": p.data.val.labels.numpy(),
        "test_logits": predict(loaders.test),
        "test_labels": p.data.test.labels.numpy(),
    }
    for name, loader in loaders.ood.items():
        logits[f"ood_{name}_logits"] = predict(loader)
    return logits


@dataclass
class RunResult:
    """What a trained run hands the store: its metrics and the logits they come from."""

    metrics: dict[str, Any]
    logits: dict[str, np.ndarray]


def train(
    claim: Claim,
    p: Prepared,
    progress: RunProgress | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> RunResult | None:
    """Train the claimed run (resuming from the checkpoints in its folder unless the claim is
    fresh), evaluate the best-validation model and return the result, for the caller to store.
    Checkpoints, the selected weights and the log are written after every epoch through the
    claim's fenced folder. In a multi-process run every rank calls this with the same claim;
    rank 0 alone writes and evaluates, and the other ranks return None once training is done."""
    started = time.perf_counter()
    spec, run, t = claim.spec, claim.run, claim.spec.training
    main = distributed.is_main()
    warn = progress.warn if progress else (lambda message: None)
    distributed.barrier()
    history = resume(p, run, warn)
    if history is None:
        history = History()
        if any(run.exists(name) for name in RunDir.CHECKPOINTS):
            p = prepare(spec)
    elif main:
        run.save_torch(RunDir.BEST, history.best_weights)
        write_log(run, history)
    loaders = make_loaders(p, t)
    if main:
        run.save_arrays(RunDir.SPLIT, **p.data.split_record())
    if progress:
        progress.start(spec, history.epoch + 1)
    on_batch = partial(progress.batch, len(loaders.train)) if progress else None
    for row in run_epochs(p, loaders, history, t, on_batch):
        if main and history.best["epoch"] == row["epoch"]:
            run.save_torch(RunDir.BEST, history.best_weights)
        save_checkpoint(p, history, run)
        if main:
            write_log(run, history)
        if on_epoch:
            on_epoch(row["epoch"])
        if progress:
            progress.epoch(row)
    if not main:
        return None
    logits = final_logits(p, loaders, history, t)
    metrics = evaluate_logits(logits, t.temperature_fit, t.n_bins)
    metrics.update(
        run_id=spec.run_id,
        best_epoch=history.best["epoch"],
        best_val_acc=history.best["val_acc"],
        train_seconds=time.perf_counter() - started,
        device=str(p.device),
        processes=distributed.world_size(),
        fast_path=p.fast.describe(),
    )
    return RunResult(metrics, logits)
