"""One run over several processes with DistributedDataParallel (docs/imagenet.md, "Many GPUs").

A launcher starts the processes and says so in the environment: ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or a SLURM job through
submitit's ``TorchDistributedEnvironment``, which exports the same variables.
:func:`process_group` joins the group (NCCL on GPUs, gloo on the CPU) and leaves it at the end.

Conventions every caller relies on:

- ``training.batch_size`` is the global batch; each of the N processes trains on
  ``batch_size / N`` samples per step.
- Every process draws the same epoch permutation from the run's generator; rank r takes the
  positions r, r + N, r + 2N... of each global batch (:func:`shard`), so the ranks' j-th batches
  together are the single-process j-th batch, and no sample is repeated.
- Rank 0 alone touches the store and evaluates; the other ranks wait for it.
- The method's random stream is seeded per rank (:func:`method_seed`): rank 0 keeps the
  single-process seed.

Outside a launch every helper is the single-process identity: rank 0 of a world of 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn

from calibench.errors import CalibenchError

T = TypeVar("T")

RANK_SEED_STRIDE = 2**32
"""Rank r's method and torch seeds are the run's plus r times this, so that the streams of
(seed, rank) pairs never coincide for seeds below 2**32."""

TIMEOUT = timedelta(minutes=60)
"""How long a rank waits at a collective (rank 0 evaluating the test set alone, writing a
checkpoint) before the group gives up."""


@dataclass(frozen=True)
class Launch:
    """What a launcher put in the environment: this process's rank among ``world_size``, and
    its rank among the processes of its node."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(env: Mapping[str, str] | None = None) -> Launch | None:
    """The launch described by ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as torchrun and
    submitit's ``TorchDistributedEnvironment`` set them), or None when they are absent."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        launch = Launch(
            int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"]))
        )
    except ValueError:
        raise CalibenchError(
            f"RANK={env['RANK']!r} / WORLD_SIZE={env['WORLD_SIZE']!r} in the environment are not "
            "integers; launch calibench with torchrun or unset them."
        ) from None
    if not 0 <= launch.rank < launch.world_size:
        raise CalibenchError(f"RANK {launch.rank} is outside WORLD_SIZE {launch.world_size}.")
    return launch


def processes_per_run(requested: int | None, executor: str) -> int:
    """The processes that train each run (``--gpus-per-run``), checked against the launch: under
    torchrun it is the launch's ``WORLD_SIZE`` and the executor must be ``local``; without one,
    more than one process needs the slurm executor (or a torchrun launch)."""
    launch = launch_from_env()
    if launch is not None and launch.world_size > 1:
        if executor != "local":
            raise CalibenchError(
                f"under torchrun every process runs the command; --executor {executor} would "
                "start more processes. Drop --executor (local is the default)."
            )
        if requested not in (None, launch.world_size):
            raise CalibenchError(
                f"--gpus-per-run {requested} does not match torchrun's {launch.world_size} "
                f"processes; use torchrun --nproc_per_node {requested}, or drop --gpus-per-run."
            )
        return launch.world_size
    n = requested or 1
    if n > 1 and executor != "slurm":
        raise CalibenchError(
            f"--gpus-per-run {n} needs {n} processes: start the same command with "
            f"`torchrun --nproc_per_node {n} $(which calibench) run ...`, or use --executor slurm."
        )
    return n


def active() -> bool:
    """Whether this process is in a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes training the run (1 outside a group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes to the store and evaluates."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` (modulo the visible GPUs, so that a
    launcher that shows each process one GPU gives ``cuda:0``) for CUDA, else ``device``."""
    if device.type != "cuda" or not active():
        return device
    launch = launch_from_env()
    local = launch.local_rank if launch else rank()
    return torch.device("cuda", local % torch.cuda.device_count())


@contextmanager
def process_group(device: torch.device, launch: Launch | None = None) -> Iterator[Launch | None]:
    """Join the process group the environment describes for the body, then leave it. Does
    nothing when there is no launch or a world of one. ``MASTER_ADDR``/``MASTER_PORT`` come
    from the launcher."""
    launch = launch or launch_from_env()
    if launch is None or launch.world_size == 1 or dist.is_initialized():
        yield launch
        return
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise CalibenchError(
                f"{name} is not set: start the processes with torchrun (it sets RANK, "
                "WORLD_SIZE, MASTER_ADDR and MASTER_PORT) or the slurm executor."
            )
    if device.type == "cuda":
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads())
    dist.init_process_group(
        backend_for(device), rank=launch.rank, world_size=launch.world_size, timeout=TIMEOUT
    )
    try:
        yield launch
    finally:
        dist.destroy_process_group()


def cpu_threads() -> int:
    """Threads for one CPU training process: the CPUs this process may use divided among the
    node's processes (``LOCAL_WORLD_SIZE``), at least 1; more makes gloo's ranks compete for
    cores and slows training many times over."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def barrier() -> None:
    """Wait until every rank arrives (nothing outside a group)."""
    if active():
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return cast(T, box[0])  # after the broadcast: rank 0's obj


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over ranks of each scalar of ``values`` (one collective for all of them)."""
    if not active():
        return values
    device = _collective_device()
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(device) for v in values])
    dist.all_reduce(stacked)
    return list(stacked / world_size())


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``value`` over the ranks, on every rank (a new tensor of the same
    dtype and device; ``value`` itself outside a group). NCCL needs it on this rank's GPU and
    gloo on the CPU: it is moved there and back when it lives elsewhere."""
    if not active():
        return value
    device = _collective_device()
    total = value.detach().to(device, copy=True)
    dist.all_reduce(total)
    return total.to(value.device)


def sum_collective() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """:func:`all_reduce_sum` when this process is one of several training a run, else None
    (what :class:`calibench.method.TrainingSetup` hands a method)."""
    return all_reduce_sum if active() else None


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(positions: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s part of a global batch: positions ``rank, rank + N, rank + 2N...``
    (DistributedSampler's rule applied within each global batch)."""
    return positions[rank::world_size]


def local_batch_size(batch_size: int, world_size: int) -> int:
    """The per-process batch of a global ``batch_size`` over ``world_size`` processes; an
    error unless it divides evenly."""
    if batch_size % world_size:
        raise CalibenchError(
            f"training.batch_size {batch_size} is the global batch and must divide evenly over "
            f"the {world_size} processes of the run. Use a multiple of {world_size}."
        )
    return batch_size // world_size


def method_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s method stream: the single-process ``seed`` on rank 0, and
    ``seed + rank * 2**32`` elsewhere, so each rank mixes its batch with its own draws."""
    return seed + rank * RANK_SEED_STRIDE


def wrap_model(
    model: nn.Module, device: torch.device, sync_bn: bool = False
) -> nn.parallel.DistributedDataParallel | None:
    """The model wrapped in DistributedDataParallel for training, or None in a single process.

    BatchNorm layers stay per process unless ``sync_bn`` (SyncBatchNorm, CUDA only). DDP's
    defaults hold: ``find_unused_parameters=False``, which is what methods that call the model
    several times per step need (every call's graph is kept until the one backward, and each
    parameter's gradient is reduced once), and buffers broadcast from rank 0 at each call."""
    if not active():
        return None
    if sync_bn:
        if device.type != "cuda":
            raise CalibenchError(
                "training.sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                "set training.sync_bn=false for CPU processes."
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
