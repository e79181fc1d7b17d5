"""A run's checkpoints: what one holds (the model, optimiser, schedule, random states of every
rank, the best-validation weights and the log so far), writing it after every epoch with the
previous one kept, and resuming from the newest one that reads back intact (docs/reliability.md,
"Checkpoints")."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from calibench.store.files import RunDir
from calibench.training import distributed

if TYPE_CHECKING:
    from calibench.training.loop import Prepared


def _rng_states(p: Prepared) -> dict[str, Any]:
    cuda = p.device.type == "cuda"
    return {
        "method_rng": p.method.rng_state(),
        "method_state": p.method.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(p.device) if cuda else None,
    }


def _checkpoint(p: Prepared, history: History) -> dict[str, Any]:
    """The resume state; rank 0's random states at the top level and the other ranks' in
    ``other_ranks`` (gathering them is a collective: every rank calls this)."""
    ranks = distributed.all_gather_object(_rng_states(p))
    return {
        "epoch": history.epoch,
        "model": p.model.state_dict(),
        "optimizer": p.optimizer.state_dict(),
        "scheduler": p.scheduler.state_dict(),
        "generator": p.generator.get_state(),
        **ranks[0],
        "other_ranks": ranks[1:],
        "best": history.best,
        "best_weights": history.best_weights,
        "log": history.log,
    }


def _restore(p: Prepared, state: dict[str, Any]) -> None:
    p.model.load_state_dict(state["model"])
    p.optimizer.load_state_dict(state["optimizer"])
    p.scheduler.load_state_dict(state["scheduler"])
    p.generator.set_state(state["generator"])
    rng = _rank_rng_states(state, distributed.rank())
    if rng is None:
        return
    p.method.set_rng_state(rng["method_rng"])
    p.method.load_state_dict(rng.get("method_state", {}))
    torch.set_rng_state(rng["torch_rng"])
    if rng["cuda_rng"] is not None and p.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda_rng"], p.device)


def _rank_rng_states(state: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s saved random states, or None when fewer processes wrote the checkpoint
    (that rank then keeps the fresh seeding of :func:`prepare`)."""
    if rank == 0:
        return state
    others = state.get("other_ranks", [])
    return others[rank - 1] if rank <= len(others) else None


def write_log(run: RunDir, history: History) -> None:
    """Write the per-epoch log so far as ``log.csv`` (one column per key of any row)."""
    run.write_text(RunDir.LOG, _csv(history.log))


def _csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@dataclass
class History:
    """What a run has done so far: the last finished epoch, the best-validation epoch and its
    weights, and the per-epoch log rows."""

    epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"val_acc": -1.0, "epoch": 0})
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def record(self, row: dict[str, Any], model: nn.Module) -> bool:
        """Log an epoch; keep the model's weights when its validation accuracy is the best so
        far (the first epoch wins ties). Returns whether it was."""
        self.epoch = row["epoch"]
        self.log.append(row)
        if row["val_acc"] <= self.best["val_acc"]:
            return False
        self.best = {"val_acc": row["val_acc"], "epoch": row["epoch"]}
        self.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True


def resume(p: Prepared, run: RunDir, warn: Callable[[str], None]) -> History | None:
    """The history of the newest readable checkpoint of ``run``, restored into ``p``; one that
    is unreadable or does not match its recorded sha256 is skipped with a warning. None when
    there is none to resume from (a restore that failed half-way leaves ``p`` unusable, so the
    caller prepares it afresh)."""
    for name in RunDir.CHECKPOINTS:
        if not run.exists(name):
            continue
        try:
            state = run.load_torch(name)
            _restore(p, state)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:120]
            warn(
                f"checkpoint {run / name} is unreadable ({type(exc).__name__}: {first_line}); "
                "skipped"
            )
            continue
        return History(state["epoch"], state["best"], state["best_weights"], state["log"])
    if any(run.exists(name) for name in RunDir.CHECKPOINTS):
        warn(f"no readable checkpoint in {run.path}: the run restarts from epoch 1")
    return None


def save_checkpoint(p: Prepared, history: History, run: RunDir) -> None:
    """Write ``last.pt``, keeping the previous one as ``last.prev.pt``. Every rank calls it
    (the ranks' random states are gathered); rank 0 writes."""
    state = _checkpoint(p, history)
    if not distributed.is_main():
        return
    newest, previous = RunDir.CHECKPOINTS
    if run.exists(newest):
        run.rotate(newest, previous)
    run.save_torch(newest, state)
