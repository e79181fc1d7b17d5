"""What ``run`` and ``evaluate`` share beyond training: the check that every dataset a command
needs is readable before anything trains, weights stored as runs without training (a
``--checkpoint`` file, timm's pretrained weights with ``--epochs 0``) and the shift evaluation
of stored runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from calibench.errors import CalibenchError
from calibench.spec import RunSpec


def check_data(specs: Sequence[RunSpec], args: argparse.Namespace) -> None:
    """Every dataset the command needs (training sets, OOD sets, the --shift set's files) is
    read before anything trains, so a missing one costs seconds (one message, exit 2)."""
    from calibench.data import default_data_root, require_datasets
    from calibench.shift import check_shift

    needed = [
        (n, s.data_root, s.download, s.training.split_seed)
        for s in specs
        for n in (s.dataset, *s.ood)
    ]
    require_datasets(needed)
    for spec in specs if args.shift else ():
        root = Path(spec.data_root) if spec.data_root else default_data_root()
        check_shift(args.shift, spec.dataset, root, args.corruptions)


def _say(console: Console) -> Callable[[str], None]:
    return lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True)


def _stored(console: Console, spec: RunSpec, metrics: dict[str, Any] | str) -> None:
    if isinstance(metrics, str):
        why = "being evaluated by another process" if metrics == "running" else metrics
        _say(console)(f"{spec.label}: {why} (use --force to evaluate it again)")
    else:
        _say(console)(
            f"stored {spec.label} ({spec.run_id}): acc {100 * metrics['acc']:.2f}%  "
            f"ECE {100 * metrics['ece']:.2f}%  ECE(TS) {100 * metrics['ece_ts']:.2f}%"
        )


def store_pretrained(specs: Sequence[RunSpec], args: argparse.Namespace, console: Console) -> int:
    """``run --epochs 0``: each dataset x timm backbone's pretrained weights as one run."""
    from calibench.evaluation.checkpoint import evaluate_pretrained
    from calibench.store.index import Store

    if any(spec.training.epochs for spec in specs):
        raise CalibenchError(
            "epochs = 0 (weights evaluated untrained) and trained runs cannot share a command; "
            "give one value of training.epochs."
        )
    store = Store(args.output)
    templates = {(s.dataset, s.backbone, s.training, s.ood): s for s in specs}
    stored = []
    for template in templates.values():
        spec, metrics = evaluate_pretrained(template, store, args.force, warn=_say(console))
        _stored(console, spec, metrics)
        stored.append(spec)
    if args.shift:
        evaluate_shift(store, stored, args, console)
    return 0


def evaluate_shift(
    store: Any, specs: Sequence[RunSpec], args: argparse.Namespace, console: Console
) -> None:
    """Store the ``--shift`` logits of every complete run of ``specs`` (missing ones only,
    unless ``--force``)."""
    from calibench.device import resolve_device
    from calibench.evaluation.shift import evaluate_shift_runs
    from calibench.shift import check_shift

    runs = [(s, store.run_dir(s)) for s in specs if store.status(s) == "complete"]
    for spec, _ in runs:
        check_shift(args.shift, spec.dataset)
    evaluate_shift_runs(
        runs,
        args.shift,
        resolve_device(args.device),
        args.corruptions,
        force=getattr(args, "force", False),
        say=_say(console),
    )


def evaluate_checkpoint(args: argparse.Namespace, config: dict, console: Console) -> int:
    """``evaluate --checkpoint FILE --backbone NAME --dataset NAME``: the weights as one run."""
    from calibench.evaluation import checkpoint
    from calibench.store.index import Store

    if not args.backbone or not args.dataset:
        raise CalibenchError(
            "--checkpoint FILE needs --backbone NAME and --dataset NAME: the backbone the "
            "weights belong to and the dataset it was trained on."
        )
    overrides = {"ood": args.ood or [], "sets": args.sets, "data_root": args.data_root}
    template = checkpoint.template_spec(
        config, args.dataset, args.backbone, device=args.device, **overrides
    )
    check_data([template], args)
    store = Store(args.output)
    spec, metrics = checkpoint.evaluate_checkpoint(args.checkpoint, template, store, args.force)
    _stored(console, spec, metrics)
    if args.shift:
        evaluate_shift(store, [spec], args, console)
    return 0
