"""Models that were not trained by calibench, stored as complete runs: weights from a file
(``calibench evaluate --checkpoint FILE``, method ``checkpoint``) and a timm model's pretrained
weights (``calibench run --epochs 0 --set training.pretrained=true``, method ``pretrained``).

Such a run is evaluated as a trained run is at its end (docs/protocol.md, "Evaluation"): the
model's logits on the dataset's validation and test splits and each OOD set, in eval mode, in
batches of ``eval_batch_size``, with the dataset's normalisation; temperature and calibrators are
fitted on the validation logits. Its folder holds what a trained run's does except the training
log and resume checkpoints: ``config.json``, ``best.pt`` (the weights evaluated), ``split.npz``,
``logits.npz`` and ``metrics.json``; so ``report``, ``evaluate --shift``, ``compare`` and the
HTML page treat it like any run. Its run id covers the weights: the SHA-256 of the state dict's
tensors (:func:`state_digest`) is the run's ``sha256`` hyperparameter, and ``epochs`` is 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calibench.data import LoaderConfig, load_dataset, make_loader, spec_for
from calibench.device import resolve_device
from calibench.errors import CalibenchError
from calibench.evaluation.predict import predict_logits
from calibench.evaluation.record import evaluate_logits
from calibench.models import TIMM_PREFIX, build_backbone
from calibench.registry import DATASETS
from calibench.spec import RunSpec, Training
from calibench.store.files import RunDir
from calibench.store.index import Store

CHECKPOINT = "checkpoint"
PRETRAINED = "pretrained"
SAVE_HINT = "Save the weights as a plain state_dict: torch.save(model.state_dict(), FILE)."


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict: every entry's name, dtype, shape and bytes, in name
    order; the same weights give the same digest however the file was written."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (read with ``weights_only``, nothing executed), or one clear
    error saying what the file holds instead and how to turn it into a state dict."""
    if not Path(path).is_file():
        raise CalibenchError(f"--checkpoint {path}: no such file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise CalibenchError(
                f"--checkpoint {path} is not a PyTorch file. {SAVE_HINT}"
            ) from None
        raise CalibenchError(
            f"--checkpoint {path} holds pickled Python objects (e.g. a whole model saved with "
            f"torch.save(model)), which calibench does not execute. {SAVE_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CalibenchError(
            f"--checkpoint {path} is not a PyTorch file ({type(exc).__name__}). {SAVE_HINT}"
        ) from None
    return _as_state_dict(state, path)


def _as_state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise CalibenchError(
            f"--checkpoint {path} holds a {type(state).__name__}, not a state_dict. {SAVE_HINT}"
        )
    if "state_dict" in state and any("lightning" in str(key) for key in state):
        raise CalibenchError(
            f"--checkpoint {path} is a PyTorch Lightning checkpoint. Save its model's weights: "
            "torch.save(LitModel.load_from_checkpoint(FILE).model.state_dict(), 'weights.pt') "
            "(or the entries of ckpt['state_dict'] with their 'model.' prefix removed)."
        )
    if {"model", "optimizer", "epoch"} <= set(state):
        raise CalibenchError(
            f"--checkpoint {path} is a training checkpoint (model, optimizer, epoch...). Give "
            "the run's best.pt, or save ckpt['model'] on its own: torch.save(ckpt['model'], FILE)."
        )
    other = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if other:
        raise CalibenchError(
            f"--checkpoint {path} is a dict whose entries {', '.join(map(repr, other[:4]))} are "
            f"not tensors; a state_dict maps parameter names to tensors. {SAVE_HINT}"
        )
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(state)`` (strict), its failure one error naming the missing,
    unexpected and mis-shaped entries."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (the model's: {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        problems = [
            f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape", shapes),
            )
            if items
        ]
        prefixed = unexpected and all(k.startswith("module.") for k in unexpected)
        hint = " Remove the 'module.' prefix of DataParallel." if prefixed else ""
        raise CalibenchError(
            f"{where} does not fit the backbone ({'; '.join(problems)}). Give the backbone and "
            f"dataset the weights were trained with (classes and channels set the shapes).{hint}"
        )
    model.load_state_dict(state)


def build_model(dataset: str, backbone: str, pretrained: bool = False) -> nn.Module:
    """Backbone ``backbone`` for ``dataset``'s classes, channels and image size (timm's
    pretrained weights when ``pretrained``), built from seed 0."""
    spec = DATASETS.get(dataset)
    torch.manual_seed(0)
    extra = {"pretrained": True} if pretrained else {}
    return build_backbone(backbone, spec.num_classes, spec.in_channels, spec.image_size, **extra)


def weights_spec(
    method: str, digest: str, dataset: str, backbone: str, training: Training, **where: Any
) -> RunSpec:
    """The run spec of weights evaluated without training: ``epochs`` 0, seed 0 and the
    weights' digest as the ``sha256`` hyperparameter; ``where`` holds ``ood``, ``data_root``
    and ``device``."""
    return RunSpec(
        method=method,
        dataset=dataset,
        backbone=backbone,
        seed=0,
        training=dataclasses.replace(training, epochs=0),
        hparams={"sha256": digest},
        ood=tuple(where.get("ood", ())),
        data_root=where.get("data_root", ""),
        device=where.get("device", "auto"),
    )


def evaluate_weights(
    spec: RunSpec, model: nn.Module, store: Store, force: bool = False
) -> dict[str, Any] | str:
    """Evaluate ``model`` as run ``spec`` and store it as a complete run; returns its metrics,
    or the store's reason not to (``complete``, ``failed`` or ``running``, without ``force``).
    An error marks the run failed, then rises."""
    claim = store.claim(spec, force=force)
    if isinstance(claim, str):
        return claim
    try:
        started = time.perf_counter()
        metrics, logits = _evaluate(spec, model, claim.run)
        metrics["train_seconds"] = time.perf_counter() - started
        store.finish(claim, metrics, logits)
    except KeyboardInterrupt:
        store.interrupt(claim)
        raise
    except Exception as exc:
        store.fail(claim, f"{type(exc).__name__} while evaluating: {exc}", None)
        raise
    finally:
        claim.close()
    return metrics


def _evaluate(
    spec: RunSpec, model: nn.Module, run: RunDir
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics and logits of ``model``; its weights and split written into ``run``."""
    t = spec.training
    device = resolve_device(spec.device)
    data = load_dataset(spec.dataset, spec.data_root, False, t.split_seed)
    dataset = spec_for(spec.dataset, data)
    model = model.to(device).eval()

    def logits(split: Any) -> np.ndarray:
        loader = make_loader(LoaderConfig(split, dataset, t.eval_batch_size, device))
        return predict_logits(model, loader, t.precision)

    arrays = {
        "val_logits": logits(data.val),
        "val_labels": data.val.labels.numpy(),
        "test_logits": logits(data.test),
        "test_labels": data.test.labels.numpy(),
    }
    for name in spec.ood:
        ood = load_dataset(name, spec.data_root, False, t.split_seed)
        arrays[f"ood_{name}_logits"] = logits(ood.test)
    run.save_torch(RunDir.BEST, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    run.save_arrays(RunDir.SPLIT, **data.split_record())
    metrics = evaluate_logits(arrays, t.temperature_fit, t.n_bins)
    val_acc = float(np.mean(arrays["val_logits"].argmax(1) == arrays["val_labels"]))
    metrics.update(run_id=spec.run_id, best_epoch=0, best_val_acc=val_acc)
    metrics.update(device=str(device), processes=1)
    return metrics, arrays


def evaluate_checkpoint(
    path: Path, template: RunSpec, store: Store, force: bool = False
) -> tuple[RunSpec, dict[str, Any] | str]:
    """Store the weights of ``path`` (a state dict for ``template``'s backbone and dataset) as
    a ``checkpoint`` run with ``template``'s evaluation settings; returns its spec and what
    :func:`evaluate_weights` returns."""
    state = read_state_dict(path)
    model = build_model(template.dataset, template.backbone)
    load_weights(model, state, f"--checkpoint {path}")
    spec = _from_template(CHECKPOINT, state_digest(model.state_dict()), template, pretrained=False)
    return spec, evaluate_weights(spec, model, store, force)


def evaluate_pretrained(
    template: RunSpec, store: Store, force: bool = False, warn: Callable[[str], None] = print
) -> tuple[RunSpec, dict[str, Any] | str]:
    """Store ``template``'s timm backbone with its pretrained weights, untrained, as a
    ``pretrained`` run; a head that timm had to replace (other class count) is warned about."""
    if not template.backbone.startswith(TIMM_PREFIX) or not template.training.pretrained:
        raise CalibenchError(
            "--epochs 0 evaluates a model without training: it needs timm/<name> backbones and "
            "--set training.pretrained=true (for weights of your own, `calibench evaluate "
            "--checkpoint FILE --backbone NAME --dataset NAME`)."
        )
    model = build_model(template.dataset, template.backbone, pretrained=True)
    classes = getattr(model, "pretrained_cfg", {}).get("num_classes")
    if classes and classes != DATASETS.get(template.dataset).num_classes:
        warn(
            f"{template.backbone} was pretrained on {classes} classes: timm gave it a new, "
            f"untrained {template.dataset} head, so this evaluation measures that head."
        )
    spec = _from_template(PRETRAINED, state_digest(model.state_dict()), template, pretrained=True)
    return spec, evaluate_weights(spec, model, store, force)


def _from_template(method: str, digest: str, template: RunSpec, pretrained: bool) -> RunSpec:
    training = dataclasses.replace(template.training, pretrained=pretrained)
    return weights_spec(
        method,
        digest,
        template.dataset,
        template.backbone,
        training,
        ood=template.ood,
        data_root=template.data_root,
        device=template.device,
    )


def template_spec(config: dict[str, Any], dataset: str, backbone: str, **overrides: Any) -> RunSpec:
    """The spec a run of ``backbone`` on ``dataset`` gets from the settings (``[training]`` <
    ``[datasets.<name>]`` < preset < ``--set training.*``), whose evaluation settings (split
    seed, eval batch size, precision, temperature fit, bins) weights are evaluated with.
    ``overrides`` are further :class:`~calibench.config.Overrides` fields (``ood``, ``sets``,
    ``data_root``, ``device``, ``preset``)."""
    from calibench.config import Overrides, build_run_specs

    wanted = Overrides(
        methods=["ce"], datasets=[dataset], backbones=[backbone], seeds=[0], **overrides
    )
    specs = build_run_specs(config, wanted)
    if len(specs) != 1:
        raise CalibenchError(
            "a --set grid (a,b,c) has no meaning for one checkpoint; give one value."
        )
    return specs[0]
