"""CRL, the correctness ranking loss (Moon et al., ICML 2020, "Confidence-Aware Learning for Deep
Neural Networks"): L = CE + weight * L_CR.

Each training sample i keeps a correctness count C_i: in how many training steps over it (one per
epoch) the network's prediction was right. Its normalised history c_i orders the samples; the
ranking term asks the confidences k (max softmax probability) to follow that order, by a margin
|c_i - c_j|:

    L_CR(i, j) = max(0, -sign(c_i - c_j) * (k_i - k_j) + |c_i - c_j|),

averaged over the pairs (i, i + 1 mod B) of the batch. The history follows the authors' code
(github:daintlab/confidence-aware-learning), not the paper's plain fraction; every place where
the two differ, and which one calibench follows, is listed in docs/stateful-methods.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from calibench import Loss, Method, TrainingSetup, register_method
from calibench.settings import Ge


def correctness_ranking_loss(
    conf: torch.Tensor, conf_other: torch.Tensor, c: torch.Tensor, c_other: torch.Tensor
) -> torch.Tensor:
    """mean_i max(0, -sign(c_i - c'_i) (k_i - k'_i) + |c_i - c'_i|) for confidences k, k' and
    correctness targets c, c' of the pairs (Moon et al., ICML 2020)."""
    gap = c - c_other
    return F.relu(-torch.sign(gap) * (conf - conf_other) + gap.abs()).mean()


def normalised_correctness(counts: torch.Tensor, epochs_done: int) -> torch.Tensor:
    """c = (C - min C) / max(E - min C, 1), with E = max(epochs_done, 1) and min over the whole
    training set (the reference code's min-max normalisation; docs/stateful-methods.md)."""
    low = counts.min()
    span = torch.clamp(max(epochs_done, 1) - low, min=1)
    return (counts - low).double() / span.double()


@register_method("crl")
class CRL(Method):
    """Correctness ranking loss: CE + weight * L_CR, each sample ranked against its neighbour in
    the batch by its correctness history. Default weight 1 (the authors' CIFAR setting)."""

    weight: Annotated[float, Ge(0)] = 1.0

    uses_indices = True

    def setup(self, info: TrainingSetup) -> None:
        self.correct_counts = torch.zeros(info.num_train, dtype=torch.int64)
        self.epochs_done = 0
        self.sum_over_processes = info.all_reduce_sum

    def _require_setup(self) -> None:
        self.require(
            hasattr(self, "correct_counts"),
            "the correctness history is not set up: call setup(TrainingSetup(...)) first.",
        )

    def _history(self, device: torch.device) -> torch.Tensor:
        """The correctness counts C, moved to ``device`` once (they follow the batches)."""
        self._require_setup()
        if self.correct_counts.device != device:
            self.correct_counts = self.correct_counts.to(device)
        return self.correct_counts

    def loss(  # type: ignore[override]  # the uses_indices form of the contract
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor
    ) -> Loss:
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        conf = F.softmax(logits, dim=-1).max(dim=-1).values
        counts = self._history(y.device)
        c = normalised_correctness(counts, self.epochs_done)[indices].to(conf.dtype)
        rank = correctness_ranking_loss(conf, conf.roll(-1), c, c.roll(-1))
        self._count(counts, indices, (logits.detach().argmax(dim=-1) == y).long())
        return Loss(ce + self.weight * rank, {"ce": ce, "rank": rank})

    def _count(self, counts: torch.Tensor, indices: torch.Tensor, correct: torch.Tensor) -> None:
        """Add a step's correct predictions to the history. When several processes train the
        run, each on its shard of the batch, their counts are summed (an all-reduce of the
        step's per-sample counts), so every process holds the history of the whole training
        set rather than of its own shards (docs/imagenet.md, "Many GPUs")."""
        if self.sum_over_processes is None:
            counts.index_add_(0, indices, correct)
            return
        step = torch.zeros(counts.shape, dtype=torch.uint8, device=counts.device)
        step.index_add_(0, indices, correct.to(torch.uint8))
        counts += self.sum_over_processes(step).to(counts.dtype)

    def on_epoch_end(self, epoch: int, val_logits: np.ndarray, val_labels: np.ndarray) -> None:
        self.epochs_done = epoch

    def state_dict(self) -> dict[str, Any]:
        self._require_setup()
        counts = self.correct_counts.cpu().clone()
        return {"correct_counts": counts, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._require_setup()
        counts = state["correct_counts"]
        self.require(
            counts.shape == self.correct_counts.shape,
            f"the saved correctness history covers {len(counts)} samples but the training split "
            f"has {len(self.correct_counts)}. Retrain it from scratch (calibench run --force).",
        )
        self.correct_counts = counts.to(torch.int64).clone()
        self.epochs_done = int(state["epochs_done"])
