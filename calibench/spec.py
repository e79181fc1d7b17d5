"""What defines a run: the training protocol (:class:`Training`), the run spec (:class:`RunSpec`)
and the rules that turn a spec into its run id. Imports no torch, no models and no TOML, so
every command can read and check run specs cheaply.

A run id is the first 12 hex digits of the SHA-256 of the spec's identity: every field that
determines the result, without where the data lives, the device, or the fast-path switches that
choose how (not what) is computed (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal, get_args

from calibench.settings import Ge, Gt, Interval, Le, check_fields, field_types

TemperatureFit = Literal["ece_grid", "nll"]
"""How T is fitted on validation logits: the reference grid by ECE, or NLL (Guo et al. 2017)."""
TEMPERATURE_FITS: tuple[str, ...] = get_args(TemperatureFit)


Switch = bool | Literal["auto"]
"""A fast-path setting: on, off, or ``"auto"`` (the measured default of the run's device type,
calibench/training/fast_path.py)."""


MAX_BINS = 1000
"""calibench's cap on histogram bins, a guard against typos (at 1000 bins a 10,000-image test set
already averages 10 images per bin)."""
MAX_SEED = 2**63 - 3
"""Seeds are offset by up to 2 for the method's and the loader's streams (int64 must hold them)."""
MAX_EPOCHS = 100_000
"""calibench's cap on epochs, a guard against typos."""
SEED_RANGE = Interval(0, MAX_SEED)
"""The valid run seeds."""
Precision = Literal["fp32", "bf16"]
"""A training precision: fp32, or bf16 (the forward pass under bf16 autocast)."""

Fraction = Annotated[float, Interval(0, 1, closed="right", note="a fraction of the epochs")]
"""A learning-rate milestone: the share of the epochs after which the rate decays."""


@dataclass(frozen=True)
class Training:
    """Optimisation and evaluation protocol shared by every method of a run. Defaults: the
    RankMixup CIFAR protocol (docs/protocol.md, "Training"); each field's annotation holds its
    valid range."""

    epochs: Annotated[int, Ge(0, note="0: weights evaluated untrained"), Le(MAX_EPOCHS)] = 200
    milestones: tuple[Fraction, ...] = (0.4, 0.6)
    lr_decay: Annotated[float, Interval(0, 1, closed="right")] = 0.1
    lr: Annotated[float, Gt(0)] = 0.1
    momentum: Annotated[float, Interval(0, 1, closed="left")] = 0.9
    weight_decay: Annotated[float, Ge(0)] = 5e-4
    batch_size: Annotated[int, Ge(1)] = 128
    eval_batch_size: Annotated[int, Ge(1)] = 512
    grad_clip: Annotated[float, Ge(0, note="0 turns clipping off")] = 2.0
    split_seed: Annotated[int, Ge(0)] = 0
    temperature_fit: TemperatureFit = "ece_grid"
    n_bins: Annotated[int, Interval(1, MAX_BINS)] = 15
    precision: Precision = "fp32"
    pretrained: bool = False
    sync_bn: bool = False
    channels_last: Switch = "auto"
    compile: Switch = "auto"
    fuse_views: Switch = "auto"

    def __post_init__(self) -> None:
        check_fields(self, "bad training settings")

    def milestone_epochs(self) -> list[int]:
        """Epochs after which the learning rate is multiplied by ``lr_decay``."""
        return sorted({max(1, round(f * self.epochs)) for f in self.milestones})


TRAINING_TYPES = field_types(Training)
TRAINING_KEYS = set(TRAINING_TYPES)
PRECISIONS = typing.get_args(TRAINING_TYPES["precision"][0])
ADDED_LATER = {"precision": "fp32", "pretrained": False, "sync_bn": False}
"""Training settings added after stores existed: they enter the run id only when they differ
from these values, so the runs of an existing store keep their ids."""
EXECUTION = ("channels_last", "compile", "fuse_views")
"""Training settings that choose how a run is computed, not what: equal results to float
tolerance (docs/speed.md). Like the device they stay out of the run id; the run's config and
result record them."""


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one training run; its hash, minus where and how it runs, is the
    run id."""

    method: str
    dataset: str
    backbone: str
    seed: int
    training: Training
    hparams: dict[str, Any] = field(default_factory=dict)
    ood: tuple[str, ...] = ()
    data_root: str = ""
    download: bool = False
    device: str = "auto"

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result (not where the data lives or which device)."""
        d = asdict(self)
        for key in ("data_root", "download", "device"):
            d.pop(key)
        for key, default in ADDED_LATER.items():
            if d["training"][key] == default:
                del d["training"][key]
        for key in EXECUTION:
            del d["training"][key]
        return d

    @property
    def run_id(self) -> str:
        return _digest(self.identity())

    @property
    def config_id(self) -> str:
        """The run id without the seed: runs that differ only by seed share it."""
        return _digest({k: v for k, v in self.identity().items() if k != "seed"})

    def keys(self) -> dict[str, Any]:
        """The columns that name this run in every per-run table."""
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "method": self.method,
            "config_id": self.config_id,
            "seed": self.seed,
            "run_id": self.run_id,
        }

    @property
    def label(self) -> str:
        return f"{self.method} / {self.dataset} / {self.backbone} / seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = {k: v for k, v in d.items() if k != "run_id"}
        training = dict(d.pop("training"))
        training["milestones"] = tuple(training["milestones"])
        return cls(training=Training(**training), ood=tuple(d.pop("ood", ())), **d)


def run_name(spec: RunSpec) -> str:
    """A unique, readable file name stem for one run."""
    backbone = spec.backbone.replace("/", "-")
    return f"{spec.dataset}_{backbone}_{spec.method}_seed{spec.seed}_{spec.run_id}"


@dataclass(frozen=True)
class Declared:
    """The data keys of a ``[datasets.<name>]`` table that declares a dataset."""

    format: Literal["imagefolder", "npz"]
    root: str | None = None
    path: str | None = None
    image_size: int | None = None
    channels: Literal[1, 3] | None = None
    stream: bool | None = None
    crop_padding: int | None = None
    hflip: bool = True
    description: str = ""


DATA_KEYS = frozenset(f.name for f in fields(Declared))
"""The keys of a ``[datasets.<name>]`` table that describe the data (the others are training
settings, ``backbone`` and ``hparams``, as for every dataset)."""
