"""The mixing diagnostic: how a trained model's confidence follows the mixing coefficient.

For test images x_i paired with x_j by a seeded permutation (pairs of different labels only),
the mixed image x' = l x_i + (1 - l) x_j is scored on a grid of l in [0, 1]. Reported: the mean
confidence (max softmax) per l, the mean confidence on the unmixed images, and the ordering
agreement: over every pair and every two grid values l_a, l_b whose relevance max(l, 1 - l)
differs, the fraction where the more relevant mix has the strictly higher confidence. That is
the order the M-NDCG loss of RankMixup (Noh et al., ICCV 2023) trains for. Definitions:
docs/report.md, "Mixing diagnostic".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from calibench.errors import CalibenchError
from calibench.spec import RunSpec
from calibench.store.files import DamagedFile, RunDir

MAX_SAMPLES = 1000
"""Test images used per run by default (the diagnostic's cost is samples x grid size)."""
N_LAMBDAS = 11
BATCH_SIZE = 512


@dataclass(frozen=True)
class MixingResult:
    """The diagnostic of one model: mean confidence per mixing coefficient, on the unmixed
    images, and the ordering agreement over ``n_comparisons`` comparisons of ``n_pairs`` pairs."""

    lambdas: np.ndarray
    mean_confidence: np.ndarray
    raw_confidence: float
    agreement: float
    n_pairs: int
    n_comparisons: int


def relevance(lambdas: np.ndarray) -> np.ndarray:
    """max(l, 1 - l): the share of the dominant image in a mix (rounded to 12 decimals, so that
    l and 1 - l of a float grid tie exactly)."""
    lambdas = np.asarray(lambdas, dtype=np.float64)
    return np.round(np.maximum(lambdas, 1 - lambdas), 12)


def order_agreement(confidence: np.ndarray, lambdas: np.ndarray) -> tuple[float, int]:
    """Fraction of comparisons (pair p, grid values a, b with relevance(l_a) > relevance(l_b))
    where confidence[a, p] > confidence[b, p], and the number of comparisons. ``confidence`` is
    (len(lambdas), pairs). Values of equal relevance (l and 1 - l) are not compared; a tie in
    confidence counts as disagreement. NaN when nothing is comparable."""
    rel = relevance(lambdas)
    agree = total = 0
    for a in range(len(rel)):
        for b in range(len(rel)):
            if rel[a] > rel[b]:
                agree += int(np.sum(confidence[a] > confidence[b]))
                total += confidence.shape[1]
    return (agree / total if total else float("nan")), total


@torch.no_grad()
def max_softmax(model: nn.Module, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Confidence max_k softmax(model(x))_k of each image, in float64."""
    model.eval()
    out = [
        torch.softmax(model(images[i : i + batch_size]).double(), dim=1).amax(dim=1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).cpu().numpy()


def mixing_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    lambdas: np.ndarray,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
) -> MixingResult:
    """The diagnostic on normalised ``images`` (N, C, H, W). Normalisation is affine, so mixing
    normalised images equals normalising mixed raw images."""
    partner = np.random.default_rng(seed).permutation(len(labels))
    keep = np.flatnonzero(labels != labels[partner])
    if len(keep) == 0:
        raise CalibenchError("the mixing diagnostic found no pair of images with different labels.")
    first = images[torch.as_tensor(keep)]
    second = images[torch.as_tensor(partner[keep])]
    confidence = np.stack(
        [max_softmax(model, lam * first + (1 - lam) * second, batch_size) for lam in lambdas]
    )
    agreement, comparisons = order_agreement(confidence, lambdas)
    return MixingResult(
        lambdas=np.asarray(lambdas, dtype=np.float64),
        mean_confidence=confidence.mean(axis=1),
        raw_confidence=float(max_softmax(model, images, batch_size).mean()),
        agreement=agreement,
        n_pairs=len(keep),
        n_comparisons=comparisons,
    )


def load_run_model(run_dir: Path, device: torch.device) -> tuple[RunSpec, nn.Module]:
    """A run's spec (``config.json``) and its selected model (``best.pt``), in eval mode."""
    from calibench.models import build_backbone
    from calibench.registry import DATASETS

    run_dir = Path(run_dir)
    try:
        spec = RunSpec.from_dict(json.loads((RunDir(run_dir) / RunDir.CONFIG).read_text()))
        weights = RunDir(run_dir).load_torch(RunDir.BEST)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, DamagedFile) as exc:
        raise CalibenchError(
            f"cannot load the model of {run_dir} ({type(exc).__name__}: {exc}); it needs "
            "config.json and best.pt."
        ) from None
    dataset = DATASETS.get(spec.dataset)
    model = build_backbone(
        spec.backbone, dataset.num_classes, dataset.in_channels, dataset.image_size
    )
    model.load_state_dict(weights)
    return spec, model.to(device).eval()


def mixing_diagnostic(
    run_dir: Path,
    max_samples: int = MAX_SAMPLES,
    n_lambdas: int = N_LAMBDAS,
    seed: int = 0,
    device: str = "cpu",
) -> MixingResult:
    """The mixing diagnostic of a stored run on at most ``max_samples`` of its test images (a
    seeded random subset) and ``n_lambdas`` equally spaced l in [0, 1]."""
    from calibench.data import LoaderConfig, load_dataset, make_loader, spec_for
    from calibench.device import resolve_device

    if max_samples < 2 or n_lambdas < 2:
        raise CalibenchError("the mixing diagnostic needs at least 2 samples and 2 lambdas.")
    torch_device = resolve_device(device)
    spec, model = load_run_model(run_dir, torch_device)
    data = load_dataset(spec.dataset, spec.data_root, False, spec.training.split_seed)
    test = data.test
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.permutation(len(test))[:max_samples])
    dataset = spec_for(spec.dataset, data)
    loader = make_loader(LoaderConfig(test, dataset, BATCH_SIZE, torch_device))
    return mixing_curve(
        model,
        loader.gather(subset),
        test.labels[torch.as_tensor(subset)].numpy(),
        np.linspace(0.0, 1.0, n_lambdas),
        seed=seed + 1,
        batch_size=spec.training.eval_batch_size,
    )
