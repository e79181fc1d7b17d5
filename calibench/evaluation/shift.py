"""Logits of a stored run's selected model on a shifted test set (docs/shift.md, "Protocol").

The best-validation weights (``best.pt``) are loaded into the run's backbone and evaluated on
every (corruption, severity) of the shift; the logits are stored beside the run's clean logits
as ``shift-<set>.npz`` with keys ``<corruption>/<severity>/logits`` and ``.../labels``. Nothing
is fitted here: the temperature and every calibrator are fitted on the clean validation split
when the metrics are computed (:mod:`calibench.evaluation.record`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from calibench.data import LoaderConfig, default_data_root, load_dataset, make_loader, spec_for
from calibench.errors import CalibenchError
from calibench.evaluation.predict import predict_logits
from calibench.models import build_backbone
from calibench.registry import DATASETS
from calibench.shift import shift_dataset, shift_set_name, shifted_test_sets
from calibench.spec import RunSpec
from calibench.store.files import DamagedFile, RunDir

SHIFT_SEED = 0
"""Seed of calibench's generated corruptions: every run of a dataset sees the same images."""


def shift_file(run_dir: Path, set_name: str) -> Path:
    return RunDir(run_dir) / RunDir.shift_name(set_name)


def load_selected_model(spec: RunSpec, run_dir: Path, device: torch.device) -> nn.Module:
    """The run's backbone with its best-validation weights (``best.pt``), in eval mode."""
    dataset = DATASETS.get(spec.dataset)
    model = build_backbone(
        spec.backbone, dataset.num_classes, dataset.in_channels, dataset.image_size
    )
    try:
        weights = RunDir(run_dir).load_torch(RunDir.BEST)
        model.load_state_dict(weights)
    except (OSError, RuntimeError, KeyError, EOFError, DamagedFile) as exc:
        raise CalibenchError(
            f"{RunDir(run_dir) / RunDir.BEST} cannot be loaded ({type(exc).__name__}); retrain "
            "the run with `calibench run ... --force` to evaluate it under shift."
        ) from None
    return model.to(device).eval()


def evaluate_shift(
    spec: RunSpec,
    run_dir: Path,
    shift: str,
    device: torch.device,
    data_root: str = "",
    corruptions: Sequence[str] | None = None,
) -> Path:
    """Store the selected model's logits on every corruption and severity of ``shift``
    (``corruptions`` restricts them); returns the file written."""
    root = Path(data_root) if data_root else default_data_root()
    t = spec.training
    data = load_dataset(spec.dataset, data_root, False, t.split_seed)
    model = load_selected_model(spec, run_dir, device)
    dataset = shift_dataset(shift, spec_for(spec.dataset, data))
    arrays: dict[str, np.ndarray] = {}
    for corruption, severity, split in shifted_test_sets(
        shift, spec.dataset, data.test, root, SHIFT_SEED, corruptions
    ):
        loader = make_loader(LoaderConfig(split, dataset, t.eval_batch_size, device))
        arrays[f"{corruption}/{severity}/logits"] = predict_logits(model, loader, t.precision)
        arrays[f"{corruption}/{severity}/labels"] = split.labels.numpy()
    name = RunDir.shift_name(shift_set_name(shift, spec.dataset))
    RunDir(run_dir).save_arrays(name, **arrays)
    return RunDir(run_dir) / name


def read_shift_logits(path: Path) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """``(corruption, severity) -> (logits, labels)`` of a stored shift file."""
    out: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    with np.load(path) as f:
        for key in f.files:
            corruption, severity, kind = key.split("/")
            if kind == "logits":
                prefix = f"{corruption}/{severity}"
                out[(corruption, int(severity))] = (f[key], f[f"{prefix}/labels"])
    return out


def evaluate_shift_runs(
    runs: Sequence[tuple[RunSpec, Path]],
    shift: str,
    device: torch.device,
    corruptions: Sequence[str] | None = None,
    force: bool = False,
    say=print,
) -> list[Path]:
    """:func:`evaluate_shift` for every ``(spec, run folder)`` whose shift file is missing or
    damaged (all of them with ``force``); returns the files written."""
    written = []
    for spec, run_dir in runs:
        path = shift_file(run_dir, shift_set_name(shift, spec.dataset))
        if not force and RunDir(run_dir).problem(path.name) is None:
            continue
        written.append(evaluate_shift(spec, run_dir, shift, device, spec.data_root, corruptions))
        say(f"shift {shift_set_name(shift, spec.dataset)}: {spec.label} -> {path.name}")
    return written
