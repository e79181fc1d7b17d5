"""The ``calibench`` command: argument parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
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
  calibench report --format md,csv,tex
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
    parser = argparse.ArgumentParser(
        prog="calibench",
        description="Train calibration methods x backbones x datasets x seeds, store every run,\n"
        "and report accuracy / ECE / AdaECE / classwise-ECE before and after temperature\n"
        "scaling, with reliability diagrams.",
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
        "training setting (training.lr=0.05); repeatable",
    )
    run.add_argument("--ood", type=_names, help="OOD test sets to score, e.g. svhn,cifar100")
    run.add_argument(
        "--data-root", help="dataset folder (default $CALIBENCH_DATA or ~/.cache/calibench/data)"
    )
    run.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets through torchvision (needs a network)",
    )
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    run.add_argument("--force", action="store_true", help="retrain runs that are already complete")
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
    _common(run)

    report = sub.add_parser(
        "report",
        help="build tables and reliability diagrams from the store",
        description="Rebuild <output>/report/ from the stored logits.",
    )
    report.add_argument(
        "--format",
        type=_names,
        default=["md", "csv"],
        help="comma-separated: md, csv, tex (default md,csv)",
    )
    _common(report)

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
        choices=["fp32", "bf16"],
        default="fp32",
        help="with --against: calibench's precision (the reference is always fp32)",
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

    listing = sub.add_parser("list", help="list methods, datasets, backbones or presets")
    listing.add_argument("what", choices=["methods", "datasets", "backbones", "presets"])
    listing.add_argument("--plugins", nargs="+", default=[], metavar="DIR")
    listing.add_argument("--config", type=Path)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        type=Path,
        default=Path("results"),
        help="results folder: store, run folders and report (default ./results)",
    )
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
        help="benchmark.toml to use (default ./benchmark.toml, else the repository's)",
    )


def _setup(args: argparse.Namespace) -> tuple[dict, list[Path]]:
    """Read benchmark.toml and load every plugin; returns the config and the plugin folders."""
    from calibench.config import find_config, load_config, plugin_dirs
    from calibench.discovery import discover_plugins

    path = find_config(args.config)
    config = load_config(path)
    dirs = plugin_dirs(config, path) + [Path(p) for p in args.plugins]
    discover_plugins(dirs)
    return config, dirs


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from calibench.config import Overrides, build_run_specs
    from calibench.executors import run_local, run_processes, run_slurm, visible_gpus
    from calibench.progress import RichProgress
    from calibench.store import Store
    from calibench.train import resolve_device

    config, dirs = _setup(args)
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
    resolve_device(args.device)
    store = Store(args.output)
    console.print(f"{len(specs)} runs -> {store.root}")
    progress = RichProgress(console, len(specs))
    if args.executor == "slurm":
        run_slurm(specs, store, dirs, dict(config.get("slurm", {})), force=args.force)
    elif args.executor == "processes":
        run_processes(specs, store, args.devices or visible_gpus(), dirs, args.force, progress)
    else:
        run_local(specs, store, args.force, progress)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from calibench.report import build_report
    from calibench.store import Store

    build_report(Store(args.output), tuple(args.format), console)
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    import json
    from functools import partial

    from rich.table import Table

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

    config, _ = _setup(args)
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
    elif args.what == "backbones":
        for name in BACKBONES.names():
            doc = (BACKBONES.get(name).__doc__ or "").strip().splitlines()[0]
            console.print(f"[bold]{name}[/]: {doc}", highlight=False)
        console.print("[bold]timm/<name>[/]: any timm model, e.g. timm/resnet18", highlight=False)
    else:
        default = config.get("default_preset", "quick")
        for name, preset in sorted(config.get("presets", {}).items()):
            mark = " (default)" if name == default else ""
            preset = preset if isinstance(preset, dict) else {}
            console.print(
                f"[bold]{name}[/]{mark}: {preset.get('description', '')}", highlight=False
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    handlers = {"run": cmd_run, "report": cmd_report, "bench": cmd_bench, "list": cmd_list}
    try:
        return handlers[args.command](args, console)
    except CalibenchError as exc:
        print(f"calibench: error: {exc}", file=sys.stderr)
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
