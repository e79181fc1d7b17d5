"""The ``calibench`` command: argument parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from calibench.errors import CalibenchError

EXAMPLES = """\
examples:
  calibench run                       # the default preset (quick: every method on digits)
  calibench run --methods rankmixup_mndcg,focal --datasets cifar10
  calibench run --preset paper-cifar10 --seeds 0,1,2 --device cuda
  calibench run --methods 'rankmixup_*' --set rankmixup_mrl.margin=1.0 --set training.lr=0.05
  calibench report --format md,csv,tex,html --compare published
  calibench metrics results/runs/digits/small_cnn/ce/seed0-*/logits.npz
  calibench list methods
"""


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from calibench.config import PRECISIONS

    parser = argparse.ArgumentParser(
        prog="calibench",
        description="Train calibration methods x backbones x datasets x seeds, store every run,\n"
        "and report accuracy, NLL and the calibration errors (ECE, AdaECE, classwise ECE,\n"
        "smooth ECE, ...) before and after post-hoc calibrators, under dataset shift and OOD,\n"
        "with intervals that say whether a difference is larger than the noise.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train every combination of a preset (resumable; complete runs are skipped)",
        description="Train every method x dataset x backbone x seed of a preset from\n"
        "benchmark.toml, with command-line overrides. Complete runs are skipped; an\n"
        "interrupted run resumes from its last epoch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--preset", help="preset of benchmark.toml (default: its default_preset)")
    run.add_argument("--methods", type=_names, help="comma-separated method names or patterns")
    run.add_argument("--datasets", type=_names, help="comma-separated dataset names")
    run.add_argument(
        "--backbones",
        type=_names,
        help="comma-separated backbones (default: each dataset's own; timm/<name> works)",
    )
    run.add_argument("--seeds", type=_ints, help="comma-separated seeds, e.g. 0,1,2")
    run.add_argument(
        "--epochs", type=_positive_int, help="epochs per run; lr milestones scale with it"
    )
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME.PARAM=VALUE",
        help="override a method hyperparameter (rankmixup_mrl.margin=1.0) or a "
        "training setting (training.lr=0.05, training.precision=bf16, "
        "training.channels_last=false; docs/speed.md for the fast path); repeatable",
    )
    run.add_argument("--ood", type=_names, help="OOD test sets to score, e.g. svhn,cifar100")
    _shift_arguments(run)
    run.add_argument(
        "--data-root", help="dataset folder (default $CALIBENCH_DATA or ~/.cache/calibench/data)"
    )
    run.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets through torchvision (needs a network)",
    )
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    run.add_argument(
        "--force",
        action="store_true",
        help="retrain complete and failed runs from scratch (a complete result stays in place "
        "until its retrain completes)",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="resume runs that failed before (by default they are skipped)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "processes", "slurm"],
        default="local",
        help="local: one run after another in this process (default); processes: one worker "
        "process per device of --devices; slurm: one job per run through submitit ([slurm] in "
        "benchmark.toml)",
    )
    run.add_argument(
        "--devices", type=_names, help="devices of the processes executor (default: every GPU)"
    )
    run.add_argument(
        "--log",
        choices=["tensorboard"],
        help="also log every epoch's loss terms and validation metrics to "
        "<output>/tensorboard/<run> (needs the tensorboard package)",
    )
    run.add_argument(
        "--runs-per-device",
        type=_positive_int,
        default=1,
        help="processes executor: runs trained at once on each device (small models fill a "
        "large GPU only several at a time; default 1)",
    )
    run.add_argument(
        "--gpus-per-run",
        type=_positive_int,
        metavar="N",
        help="processes (one GPU each, or CPU processes with --device cpu) that train each run "
        "together with DistributedDataParallel: start the command with torchrun "
        "--nproc_per_node N, or use --executor slurm (default 1; torchrun's WORLD_SIZE)",
    )
    _common(run)

    report = sub.add_parser(
        "report",
        help="build tables and reliability diagrams from the store",
        description="Rebuild <output>/report/ from the stored logits.",
    )
    report.add_argument(
        "--format",
        type=_names,
        default=["md", "csv", "html"],
        help="comma-separated: md, csv, tex, html (default md,csv,html)",
    )
    report.add_argument(
        "--compare",
        type=_names,
        default=[],
        metavar="published",
        help="show published numbers (calibench/published.csv) beside the measured ones",
    )
    report.add_argument(
        "--mixing-samples",
        type=int,
        default=1000,
        metavar="N",
        help="test images per run for the html report's mixing diagnostic (0: off; default 1000)",
    )
    report.add_argument(
        "--calibrators",
        type=_names,
        help="post-hoc calibrators fitted on each run's validation logits for the method x "
        "calibrator and shift tables (default: all of `calibench list calibrators`; none: off)",
    )
    _common(report)

    _metrics_parser(sub)

    bench = sub.add_parser(
        "bench",
        help="time each method's loss beside the model, or calibench against the reference",
        description="Default: per training step, the whole step, the method's own loss work "
        "(mixing, losses and their backward, measured with a stand-in model) and the "
        "remainder, which is the model's forward/backward passes and the optimiser step.\n"
        "--against reference: train-step throughput (input images/s), peak memory and FLOPs "
        "of calibench's pipeline beside a rebuild of the official RankMixup training "
        "pipeline (PIL transforms, DataLoader workers, float32), timed in alternating blocks "
        "in one process; see docs/speed.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--methods", type=_names, help="methods to time (default: all)")
    bench.add_argument(
        "--dataset",
        default="digits",
        help="input shape and class count of the batches (default digits); with --against, "
        "its real training split when readable offline, else random images of its shape",
    )
    bench.add_argument(
        "--backbone", default="small_cnn", help="backbone to time (default small_cnn)"
    )
    bench.add_argument(
        "--batch-size", type=_positive_int, default=128, help="images per batch (default 128)"
    )
    bench.add_argument(
        "--steps",
        type=_positive_int,
        default=20,
        help="timed steps per method (default 20); with --against, per block and path",
    )
    bench.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    bench.add_argument(
        "--against",
        choices=["reference"],
        help="compare calibench's training pipeline with the reference pipeline",
    )
    bench.add_argument(
        "--blocks",
        type=_positive_int,
        default=5,
        help="with --against: alternating block pairs, medians taken over them (default 5)",
    )
    bench.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="with --against: calibench's precision (the reference is always fp32)",
    )
    bench.add_argument(
        "--fast",
        default="auto",
        metavar="SWITCHES",
        help="with --against: calibench's fast path: auto (default, the device's measured "
        "defaults), plain, or a comma-separated list of channels_last, compile, fuse_views "
        "(docs/speed.md)",
    )
    bench.add_argument(
        "--num-workers",
        type=int,
        help="with --against: the reference's DataLoader workers (default min(4, cpu count))",
    )
    bench.add_argument(
        "--peak-tflops",
        type=float,
        help="with --against: the device's peak TFLOP/s for MFU (default: the datasheet "
        "table of docs/speed.md, CUDA only)",
    )
    bench.add_argument(
        "--data-root", help="with --against: dataset folder (default as for calibench run)"
    )
    bench.add_argument(
        "--json", action="store_true", help="with --against: print JSON instead of the table"
    )
    bench.add_argument(
        "--output", type=Path, metavar="FILE", help="with --against: also write the JSON here"
    )
    bench.add_argument("--plugins", nargs="+", default=[], metavar="DIR")
    bench.add_argument("--config", type=Path)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate stored runs under dataset shift, without retraining",
        description="Load the selected (best-validation) model of every complete run in\n"
        "<output> and store its logits on every corruption and severity of --shift, beside\n"
        "the clean logits. `calibench report` then adds the shift tables and box plots.",
        epilog="examples:\n  calibench evaluate --shift cifar10-c --output results\n"
        "  calibench evaluate --shift corrupt --corruptions gaussian_noise,contrast\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _shift_arguments(evaluate, required=True)
    evaluate.add_argument("--methods", type=_names, help="only these methods (names or patterns)")
    evaluate.add_argument("--datasets", type=_names, help="only runs on these datasets")
    evaluate.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    evaluate.add_argument(
        "--force", action="store_true", help="recompute shift logits that are already stored"
    )
    _common(evaluate)

    compare = sub.add_parser(
        "compare",
        help="is method A better than method B beyond the noise? (paired over seeds)",
        description="Compare two methods of a results folder on one metric, per dataset and\n"
        "backbone, paired over the seeds both were trained with: the mean difference A - B,\n"
        "its 95% t-interval over seeds, a paired bootstrap over test samples (acc, nll,\n"
        "brier and the binned calibration errors), a Wilcoxon signed-rank p-value (6+ seeds)\n"
        "and the verdict: better only where every interval excludes 0, else tied.",
        epilog="examples:\n  calibench compare rankmixup_mndcg ce\n"
        "  calibench compare focal ce --metric ece_ts --output results/digits-3seeds\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("a", help="method A")
    compare.add_argument("b", help="method B")
    compare.add_argument("--metric", default="ece", help="metric column (default ece)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of text")
    _output(compare)

    init = sub.add_parser(
        "init",
        help="write a copy of the default settings to ./benchmark.toml to edit",
        description="Write the packaged default settings (presets, protocols, method "
        "hyperparameters) to ./benchmark.toml, which every command then reads. An existing "
        "file is kept unless --force.",
    )
    init.add_argument("--force", action="store_true", help="overwrite ./benchmark.toml")

    status = sub.add_parser(
        "status",
        help="list every run of a results folder: complete, running, failed, interrupted",
        description="One line per run in <output>: its status, last epoch, and the error of a "
        "failed run; a run whose process died shows as interrupted. Rebuilds the index from "
        "the run folders when it is missing (--rebuild forces it).",
    )
    status.add_argument(
        "--rebuild", action="store_true", help="rebuild calibench.db from the run folders first"
    )
    _output(status)

    listing = sub.add_parser(
        "list", help="list methods, datasets, backbones, presets or calibrators"
    )
    listing.add_argument(
        "what", choices=["methods", "datasets", "backbones", "presets", "calibrators"]
    )
    listing.add_argument("--plugins", nargs="+", default=[], metavar="DIR")
    listing.add_argument("--config", type=Path)
    return parser


def _shift_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    from calibench.shift import SHIFTS

    p.add_argument(
        "--shift",
        choices=SHIFTS,
        required=required,
        help="evaluate the selected model on a corrupted test set: the official cifar10-c, "
        "cifar100-c or tiny_imagenet-c files under the data root, or `corrupt` for "
        "calibench's generated corruptions of the run's dataset (5 severities each)",
    )
    p.add_argument(
        "--corruptions", type=_names, help="only these corruptions of the shift (default: all)"
    )


def _metrics_parser(sub: argparse._SubParsersAction) -> None:
    from calibench.metrics import TEMPERATURE_FITS

    metrics = sub.add_parser(
        "metrics",
        help="calibration metrics of any logits file (.npy, .npz, .pt, .csv)",
        description="Every metric of calibench.metrics.calibration_metrics for logits saved by\n"
        "any code; temperature scaling too when validation logits are given (or stored in\n"
        "the .npz as val_logits/val_labels). A run's logits.npz needs no other flag.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    metrics.add_argument("logits", type=Path, metavar="LOGITS", help="(N, K) logits file")
    metrics.add_argument("--labels", type=Path, help="(N,) class indices (default: in LOGITS)")
    metrics.add_argument(
        "--val-logits", type=Path, help="validation logits for temperature scaling"
    )
    metrics.add_argument("--val-labels", type=Path, help="validation labels")
    metrics.add_argument(
        "--n-bins", type=_positive_int, default=15, help="bins of the ECE-like metrics (15)"
    )
    metrics.add_argument(
        "--temperature-fit",
        choices=TEMPERATURE_FITS,
        default="ece_grid",
        help="how T is fitted on the validation logits (default ece_grid)",
    )
    metrics.add_argument(
        "--probabilities",
        action="store_true",
        help="the files hold probabilities (rows summing to 1); log p is used as the logits",
    )
    metrics.add_argument("--json", action="store_true", help="print one JSON object")


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        type=Path,
        default=Path("results"),
        help="results folder: store, run folders and report (default ./results)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument(
        "--plugins",
        nargs="+",
        default=[],
        metavar="DIR",
        help="extra folders of method plugin files",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="settings file (default ./benchmark.toml, else the packaged defaults; "
        "`calibench init` writes a copy to edit)",
    )


def _setup(args: argparse.Namespace) -> tuple[dict, list[Path], Path]:
    """Read the settings and load every plugin; returns the config, the plugin folders and the
    settings file that was read."""
    from calibench.config import find_config, load_config, plugin_dirs
    from calibench.discovery import discover_plugins

    path = find_config(args.config)
    config = load_config(path)
    dirs = plugin_dirs(config, path) + [Path(p) for p in args.plugins]
    discover_plugins(dirs)
    return config, dirs, path


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from calibench import distributed
    from calibench.config import Overrides, build_run_specs
    from calibench.executors import run_local, run_processes, run_slurm, visible_gpus
    from calibench.progress import RichProgress, print_outcomes
    from calibench.store import Store
    from calibench.train import resolve_device

    config, dirs, _ = _setup(args)
    specs = build_run_specs(
        config,
        Overrides(
            preset=args.preset,
            methods=args.methods,
            datasets=args.datasets,
            backbones=args.backbones,
            seeds=args.seeds,
            epochs=args.epochs,
            ood=args.ood,
            sets=args.sets,
            data_root=args.data_root,
            download=args.download,
            device=args.device,
        ),
    )
    device = resolve_device(args.device)
    gpus_per_run = distributed.processes_per_run(args.gpus_per_run, args.executor)
    if args.shift:
        from calibench.shift import check_shift

        for spec in specs:
            check_shift(args.shift, spec.dataset)
    store = Store(args.output)
    with distributed.process_group(device):
        if not distributed.is_main():
            console = Console(quiet=True)
        console.print(f"{len(specs)} runs -> {store.root}", highlight=False, markup=False)
        progress = RichProgress(console, len(specs))
        if args.log == "tensorboard":
            from calibench.tensorboard_log import TensorBoardProgress

            progress = TensorBoardProgress(progress, store)
        retry = args.retry_failed
        if args.executor == "slurm":
            slurm = dict(config.get("slurm", {}))
            outcomes = run_slurm(
                specs, store, dirs, slurm, args.force, retry_failed=retry, gpus_per_run=gpus_per_run
            )
        elif args.executor == "processes":
            devices = args.devices or visible_gpus()
            outcomes = run_processes(
                specs, store, devices, dirs, args.force, progress, retry, args.runs_per_device
            )
        else:
            outcomes = run_local(specs, store, args.force, progress, retry)
    if args.shift and distributed.is_main():
        _evaluate_shift(store, [o.spec for o in outcomes], args, console)
    return print_outcomes(outcomes, console)


def _evaluate_shift(store, specs, args: argparse.Namespace, console: Console) -> None:
    from calibench.shift import check_shift
    from calibench.shift_eval import evaluate_shift_runs
    from calibench.train import resolve_device

    runs = [(s, store.run_dir(s)) for s in specs if store.status(s) == "complete"]
    for spec, _ in runs:
        check_shift(args.shift, spec.dataset)
    evaluate_shift_runs(
        runs,
        args.shift,
        resolve_device(args.device),
        args.corruptions,
        force=getattr(args, "force", False),
        say=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
    )


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from calibench.config import RunSpec, expand_methods
    from calibench.store import Store

    _setup(args)
    store = Store(args.output)
    methods = set(expand_methods(args.methods)) if args.methods else None
    specs = []
    for run in store.complete_runs():
        spec = RunSpec.from_dict(json.loads(run["config"]))
        if (methods is None or spec.method in methods) and (
            args.datasets is None or spec.dataset in args.datasets
        ):
            specs.append(spec)
    if not specs:
        raise CalibenchError(f"no complete run in {store.root} matches the selection.")
    _evaluate_shift(store, specs, args, console)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from calibench.report import build_report
    from calibench.store import Store

    calibrators = None if args.calibrators is None else tuple(args.calibrators)
    if calibrators == ("none",):
        calibrators = ()
    build_report(
        Store(args.output),
        tuple(args.format),
        console,
        tuple(args.compare),
        args.mixing_samples,
        calibrators,
    )
    return 0


def cmd_metrics(args: argparse.Namespace, console: Console) -> int:
    import json

    from calibench.evaluation import evaluate_logits
    from calibench.logits_io import load_logit_set
    from calibench.metrics import calibration_metrics
    from calibench.store import strict_json

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
    from rich.table import Table

    table = Table(title=f"{args.logits.name}: {result['n_test']} samples, {args.n_bins} bins")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "temperature" in result:
        table.add_column(f"after TS (T={result['temperature']:.3g})", justify="right")
    for name in ("acc", "nll", "brier", "ece", "adaece", "cece", "mce"):
        cells = [result[name], *([result[f"{name}_ts"]] if "temperature" in result else [])]
        percent = name not in ("nll", "brier")
        table.add_row(
            f"{name} (%)" if percent else name,
            *[f"{100 * v:.2f}" if percent else f"{v:.4f}" for v in cells],
        )
    console.print(table)
    for key in sorted(k for k in result if k.startswith("ood_")):
        console.print(f"{key}: {result[key]:.4f}", highlight=False)
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    import json
    from functools import partial

    from rich.table import Table

    from calibench import fast_path
    from calibench.bench import (
        bench_methods,
        compare_with_reference,
        comparison_document,
        comparison_table,
        write_comparison,
    )
    from calibench.config import expand_methods
    from calibench.models import check_backbone_name
    from calibench.registry import DATASETS
    from calibench.train import resolve_device

    _setup(args)
    methods = expand_methods(args.methods or ["*"])
    DATASETS.get(args.dataset)
    check_backbone_name(args.backbone)
    device = resolve_device(args.device)
    if args.against:
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
    rows = bench_methods(methods, args.dataset, args.backbone, args.batch_size, args.steps, device)
    base = next((r for r in rows if r.method == "ce"), rows[0])
    table = Table(
        title=f"ms per training step: {args.backbone} on {args.dataset}-shaped batches "
        f"of {args.batch_size}, {device}, median of {args.steps} steps"
    )
    for column in (
        "method",
        "forward calls",
        "images through model / batch",
        "step",
        "model fwd/bwd + optimiser",
        "method's loss work",
        f"step / {base.method} step",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(
            r.method,
            str(r.forward_passes),
            f"{r.samples_per_input:.0f}x",
            f"{r.step_ms:.2f}",
            f"{r.model_ms:.2f}",
            f"{r.loss_ms:.2f}",
            f"{r.step_ms / base.step_ms:.2f}x",
        )
    console.print(table)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from calibench.registry import BACKBONES, DATASETS, METHODS

    config, _, path = _setup(args)
    if args.what == "methods":
        from calibench.method import method_fields

        for name in METHODS.names():
            hp = ", ".join(f"{k}={v!r}" for k, (_, v) in method_fields(name).items())
            doc = (METHODS.get(name).__doc__ or "").strip().splitlines()[0]
            console.print(f"[bold]{name}[/]({hp})\n    {doc}", highlight=False)
    elif args.what == "datasets":
        for name in DATASETS.names():
            spec = DATASETS.get(name)
            console.print(
                f"[bold]{name}[/]: {spec.num_classes} classes, {spec.in_channels}x"
                f"{spec.image_size}x{spec.image_size}. {spec.description}",
                highlight=False,
            )
    elif args.what == "calibrators":
        from calibench.calibrators import calibrator_fields
        from calibench.registry import CALIBRATORS

        for name in CALIBRATORS.names():
            hp = ", ".join(f"{k}={v!r}" for k, (_, v) in calibrator_fields(name).items())
            doc = (CALIBRATORS.get(name).__doc__ or "").strip().splitlines()[0]
            console.print(f"[bold]{name}[/]({hp})\n    {doc}", highlight=False)
    elif args.what == "backbones":
        for name in BACKBONES.names():
            doc = (BACKBONES.get(name).__doc__ or "").strip().splitlines()[0]
            console.print(f"[bold]{name}[/]: {doc}", highlight=False)
        console.print("[bold]timm/<name>[/]: any timm model, e.g. timm/resnet18", highlight=False)
    else:
        console.print(f"presets of {path}", style="dim", highlight=False, markup=False)
        default = config.get("default_preset", "quick")
        for name, preset in sorted(config.get("presets", {}).items()):
            mark = " (default)" if name == default else ""
            preset = preset if isinstance(preset, dict) else {}
            console.print(
                f"[bold]{name}[/]{mark}: {preset.get('description', '')}", highlight=False
            )
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import asdict

    from calibench.compare import compare_pair
    from calibench.report import collect
    from calibench.store import Store

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
    from calibench.progress import print_status
    from calibench.store import Store

    store = Store(args.output)
    if args.rebuild:
        console.print(f"indexed {store.rebuild_index()} runs from the run folders")
    print_status(store.runs(), console)
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


if __name__ == "__main__":
    sys.exit(main())
