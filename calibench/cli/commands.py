"""The ``calibench`` commands: each ``cmd_<command>`` parses nothing, calls the work and prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from calibench.cli.evaluate import check_data, evaluate_checkpoint, evaluate_shift, store_pretrained
from calibench.cli.parser import build_parser
from calibench.errors import CalibenchError


def _setup(args: argparse.Namespace) -> tuple[dict, list[Path], Path]:
    """Read the settings and load every plugin; returns the config, the plugin folders and the
    settings file that was read."""
    from calibench.config import find_config, load_config, plugin_dirs
    from calibench.plugins import discover_plugins

    path = find_config(args.config)
    config = load_config(path)
    dirs = plugin_dirs(config, path) + [Path(p) for p in args.plugins]
    discover_plugins(dirs)
    return config, dirs, path


def _overrides(args: argparse.Namespace):
    """The selection flags (and, for ``run``, the data and device flags) as config overrides."""
    from calibench.config import Overrides

    return Overrides(
        preset=args.preset,
        methods=args.methods,
        datasets=args.datasets,
        backbones=args.backbones,
        seeds=args.seeds,
        epochs=args.epochs,
        ood=getattr(args, "ood", None),
        sets=args.sets,
        data_root=getattr(args, "data_root", None),
        download=getattr(args, "download", False),
        device=getattr(args, "device", "auto"),
    )


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from calibench.cli.display import print_outcomes
    from calibench.config import build_run_specs
    from calibench.device import resolve_device
    from calibench.store.index import Store
    from calibench.training import distributed

    config, dirs, _ = _setup(args)
    specs = build_run_specs(config, _overrides(args))
    gpus_per_run = distributed.processes_per_run(args.gpus_per_run, args.executor)
    store = Store(args.output)
    if args.dry_run:
        return _dry_run(specs, store, args, console)
    check_data(specs, args)
    if any(spec.training.epochs == 0 for spec in specs):
        return store_pretrained(specs, args, console)
    device = resolve_device(args.device)
    with distributed.process_group(device):
        if not distributed.is_main():
            console = Console(quiet=True)
        console.print(f"{len(specs)} runs -> {store.root}", highlight=False, markup=False)
        progress = _progress(specs, store, args, console)
        try:
            outcomes = _execute(specs, store, dirs, config, args, progress, gpus_per_run)
        finally:
            progress.close()
    if args.shift and distributed.is_main():
        evaluate_shift(store, [o.spec for o in outcomes], args, console)
    return print_outcomes(outcomes, console)


def _progress(specs, store, args: argparse.Namespace, console: Console):
    """The sweep's progress display, its first time estimates from the store's measured
    epochs, wrapped for TensorBoard with ``--log tensorboard``."""
    from calibench.cli.display import RichProgress
    from calibench.cli.plan import EpochTimes, plan_runs, stored_rows

    rows = stored_rows(store)
    planned = plan_runs(specs, rows, args.force, args.retry_failed)
    progress = RichProgress(console, planned, EpochTimes.from_store(store, rows))
    if args.log == "tensorboard":
        from calibench.training.tensorboard import TensorBoardProgress

        return TensorBoardProgress(progress, store)
    return progress


def _execute(specs, store, dirs, config, args: argparse.Namespace, progress, gpus_per_run: int):
    """Train ``specs`` with the chosen executor; returns their outcomes."""
    from calibench.training.executors import run_local, run_processes, run_slurm, visible_gpus

    retry = args.retry_failed
    if args.executor == "slurm":
        slurm = dict(config.get("slurm", {}))
        return run_slurm(
            specs, store, dirs, slurm, args.force, retry_failed=retry, gpus_per_run=gpus_per_run
        )
    if args.executor == "processes":
        devices = args.devices or visible_gpus()
        return run_processes(
            specs, store, devices, dirs, args.force, progress, retry, args.runs_per_device
        )
    return run_local(specs, store, args.force, progress, retry)


def _dry_run(specs, store, args: argparse.Namespace, console: Console) -> int:
    """``run --dry-run``: the runs the command would train, resume or skip, and their cost;
    nothing is written (no folder, no index)."""
    from calibench.cli import plan
    from calibench.cli.display import print_plan

    rows = plan.stored_rows(store)
    planned = plan.plan_runs(specs, rows, args.force, args.retry_failed)
    images, times = plan.training_images(specs, rows), plan.EpochTimes.from_store(store, rows)
    print_plan(planned, console, images, times, plan.no_index_note(store))
    console.print(f"dry run: nothing trained or written ({store.root})", markup=False)
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from fnmatch import fnmatch

    from calibench.spec import RunSpec
    from calibench.store.index import Store

    config, _, _ = _setup(args)
    if args.checkpoint is not None:
        return evaluate_checkpoint(args, config, console)
    with_checkpoint = {"--backbone": args.backbone, "--dataset": args.dataset}
    given = [flag for flag, value in {**with_checkpoint, "--ood": args.ood}.items() if value]
    if given or args.sets:
        raise CalibenchError(f"{', '.join(given or ['--set'])}: only with --checkpoint FILE.")
    if args.shift is None:
        raise CalibenchError(
            "evaluate needs --shift NAME (stored runs under dataset shift) or --checkpoint FILE "
            "(weights to store as a run)."
        )
    store = Store(args.output)
    specs = []
    for run in store.complete_runs():
        spec = RunSpec.from_dict(json.loads(run["config"]))
        if (args.methods is None or any(fnmatch(spec.method, m) for m in args.methods)) and (
            args.datasets is None or spec.dataset in args.datasets
        ):
            specs.append(spec)
    if not specs:
        raise CalibenchError(f"no complete run in {store.root} matches the selection.")
    evaluate_shift(store, specs, args, console)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from calibench.report.build import build_report
    from calibench.report.table import terminal
    from calibench.store.index import Store

    try:
        _setup(args)
    except CalibenchError as exc:
        console.print(f"warning: {exc} The report is built from the store alone.", markup=False)
    calibrators = None if args.calibrators is None else tuple(args.calibrators)
    if calibrators == ("none",):
        calibrators = ()
    report = build_report(
        Store(args.output),
        tuple(args.format),
        tuple(args.compare),
        args.mixing_samples,
        calibrators,
        lambda m: console.print(f"warning: {m}", markup=False, highlight=False, soft_wrap=True),
    )
    for table in report.terminal:
        for part in terminal(table, console.width):
            console.print(part)
    console.print(f"report written to {report.folder}", markup=False, highlight=False)
    return 0


def cmd_metrics(args: argparse.Namespace, console: Console) -> int:
    import json

    from calibench.evaluation.metrics import calibration_metrics
    from calibench.evaluation.record import evaluate_logits
    from calibench.store.files import strict_json
    from calibench.store.foreign import load_logit_set

    data = load_logit_set(
        args.logits, args.labels, args.val_logits, args.val_labels, args.probabilities
    )
    if "val_logits" in data:
        result = evaluate_logits(data, args.temperature_fit, args.n_bins)
    else:
        result = calibration_metrics(data["test_logits"], data["test_labels"], args.n_bins)
        result.update(n_bins=args.n_bins, n_test=len(data["test_labels"]))
    if args.json:
        print(json.dumps(strict_json(result), sort_keys=True))
        return 0
    from calibench.cli.display import print_metrics

    title = f"{args.logits.name}: {result['n_test']} samples, {args.n_bins} bins"
    print_metrics(result, title, console)
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from calibench.config import expand_methods
    from calibench.device import resolve_device
    from calibench.models import check_backbone_name
    from calibench.registry import DATASETS

    _setup(args)
    methods = expand_methods(args.methods or ["*"])
    DATASETS.get(args.dataset)
    check_backbone_name(args.backbone)
    device = resolve_device(args.device)
    if args.against:
        return _bench_against_reference(args, methods, device, console)
    only_against = (
        ("--json", args.json),
        ("--output", args.output),
        ("--num-workers", args.num_workers),
        ("--peak-tflops", args.peak_tflops),
        ("--precision bf16", args.precision == "bf16"),
        ("--fast", args.fast != "auto"),
    )
    given = [flag for flag, value in only_against if value not in (None, False)]
    if given:
        raise CalibenchError(f"{', '.join(given)} only apply with --against reference.")
    from calibench.bench.steps import bench_methods
    from calibench.bench.tables import bench_table

    rows = bench_methods(methods, args.dataset, args.backbone, args.batch_size, args.steps, device)
    title = (
        f"ms per training step: {args.backbone} on {args.dataset}-shaped batches "
        f"of {args.batch_size}, {device}, median of {args.steps} steps"
    )
    console.print(bench_table(rows, title))
    return 0


def _bench_against_reference(args: argparse.Namespace, methods, device, console: Console) -> int:
    """``bench --against reference``: the comparison as a table, or JSON (``--json``), saved
    after each method with ``--output``."""
    from functools import partial

    from calibench.bench.compare import (
        compare_with_reference,
        comparison_document,
        write_comparison,
    )
    from calibench.bench.tables import comparison_table
    from calibench.training import fast_path

    comparison = compare_with_reference(
        methods,
        args.dataset,
        args.backbone,
        args.batch_size,
        args.steps,
        args.blocks,
        device,
        precision=args.precision,
        num_workers=args.num_workers,
        data_root=args.data_root,
        peak_tflops=args.peak_tflops,
        on_row=partial(write_comparison, path=args.output) if args.output else None,
        fast=fast_path.parse(args.fast, device),
    )
    if args.json:
        print(json.dumps(comparison_document(comparison), indent=2))
    else:
        console.print(comparison_table(comparison))
    return 0


def _first_line(obj: object) -> str:
    """The first line of ``obj``'s docstring, escaped so that rich prints it as written."""
    from rich.markup import escape

    lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return escape(lines[0]) if lines else ""


def _defaults(fields: dict) -> str:
    from rich.markup import escape

    return escape(", ".join(f"{k}={v!r}" for k, (_, v) in fields.items()))


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from rich.markup import escape

    from calibench.config import config_files
    from calibench.registry import BACKBONES, DATASETS, METHODS

    config, _, path = _setup(args)
    if args.what == "methods":
        from calibench.method import method_fields

        for name in METHODS.names():
            hp, doc = _defaults(method_fields(name)), _first_line(METHODS.get(name))
            console.print(f"[bold]{name}[/]({hp})\n    {doc}", highlight=False)
    elif args.what == "datasets":
        for name in DATASETS.names():
            spec = DATASETS.get(name)
            console.print(
                f"[bold]{name}[/]: {spec.num_classes} classes, {spec.in_channels}x"
                f"{spec.image_size}x{spec.image_size}. {escape(str(spec.description))}",
                highlight=False,
            )
    elif args.what == "calibrators":
        from calibench.evaluation.calibrators import calibrator_fields
        from calibench.registry import CALIBRATORS

        for name in CALIBRATORS.names():
            hp, doc = _defaults(calibrator_fields(name)), _first_line(CALIBRATORS.get(name))
            console.print(f"[bold]{name}[/]({hp})\n    {doc}", highlight=False)
    elif args.what == "backbones":
        for name in BACKBONES.names():
            console.print(f"[bold]{name}[/]: {_first_line(BACKBONES.get(name))}", highlight=False)
        console.print("[bold]timm/<name>[/]: any timm model, e.g. timm/resnet18", highlight=False)
    else:
        files = " + ".join(str(p) for p in config_files(path))
        console.print(f"presets of {files}", style="dim", highlight=False, markup=False)
        default = config.get("default_preset", "quick")
        for name, preset in sorted(config.get("presets", {}).items()):
            mark = " (default)" if name == default else ""
            about = escape(str(preset.get("description", "") if isinstance(preset, dict) else ""))
            console.print(f"[bold]{escape(name)}[/]{mark}: {about}", highlight=False)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import asdict

    from calibench.evaluation.compare import compare_pair
    from calibench.report.collect import collect
    from calibench.store.index import Store

    table, runs = collect(Store(args.output))
    results = compare_pair(table, runs, args.a, args.b, args.metric)
    if args.json:
        payload = [
            {"dataset": d, "backbone": b, **asdict(c), "winner": c.winner} for d, b, c in results
        ]
        print(json.dumps(payload, indent=2))
        return 0
    for dataset, backbone, comparison in results:
        console.print(f"{dataset} / {backbone}: {comparison.describe()}", highlight=False,
                      markup=False, soft_wrap=True)  # fmt: skip
    return 0


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    import shutil

    from calibench.config import CONFIG_NAME, DEFAULT_CONFIG

    target = Path.cwd() / CONFIG_NAME
    if target.exists() and not args.force:
        raise CalibenchError(f"{target} exists already; keep it, or pass --force to overwrite it.")
    shutil.copyfile(DEFAULT_CONFIG, target)
    console.print(f"wrote {target}: edit it; every command here now reads it", highlight=False)
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from calibench.cli.display import print_status
    from calibench.store.index import Store

    store = Store(args.output)
    if args.rebuild:
        console.print(f"indexed {store.rebuild_index()} runs from the run folders")
    if any(getattr(args, name) for name in SELECTION):
        return _status_of_selection(store, args, console)
    print_status(store.runs(), console)
    return 0


SELECTION = ("preset", "methods", "datasets", "backbones", "seeds", "epochs", "sets")
"""The selection flags of ``run`` that ``status`` takes too."""


def _status_of_selection(store, args: argparse.Namespace, console: Console) -> int:
    """``status`` with selection flags: every run of that sweep, stored or pending."""
    from calibench.cli.display import print_plan
    from calibench.cli.plan import no_index_note, plan_runs, stored_rows
    from calibench.config import build_run_specs

    config, _, _ = _setup(args)
    specs = build_run_specs(config, _overrides(args))
    planned = plan_runs(specs, stored_rows(store), False, False)
    print_plan(planned, console, note=no_index_note(store))
    return 0


COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "metrics": cmd_metrics,
    "bench": cmd_bench,
    "list": cmd_list,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "init": cmd_init,
    "status": cmd_status,
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``calibench`` command. Exit codes: 0 done, 1 some runs failed (the others
    finished), 2 bad input or an unusable output folder (one message, nothing stored is
    touched), 130 interrupted (run the same command again to resume)."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return COMMANDS[args.command](args, console)
    except CalibenchError as exc:
        print(f"calibench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"calibench: error: cannot use{where}: {exc.strerror or exc}. Check that the path "
            "is a writable folder with free space (e.g. --output DIR).",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "calibench: interrupted. Finished epochs are saved; run the same command again "
            "to resume.",
            file=sys.stderr,
        )
        return 130
