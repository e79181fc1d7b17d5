"""The ``calibench`` command's arguments: one ``add_<command>`` per command."""

from __future__ import annotations

import argparse
from pathlib import Path

from calibench.cli.choices import LazyChoices, comma_ints, comma_names, count
from calibench.settings import Ge, Interval
from calibench.spec import MAX_BINS

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
DATA_ROOT_HELP = "dataset folder (default $CALIBENCH_DATA or ~/.cache/calibench/data)"
POSITIVE_INT = count(Ge(1))
"""The type of every count on the command line (epochs, batch sizes, bins, repeats)."""


def build_parser() -> argparse.ArgumentParser:
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

    add_run(sub)
    add_report(sub)
    add_metrics(sub)
    add_bench(sub)
    add_evaluate(sub)
    add_compare(sub)
    add_init(sub)
    add_status(sub)
    add_list(sub)
    return parser


def add_run(sub: argparse._SubParsersAction) -> None:
    """The ``run`` command's arguments."""
    run = sub.add_parser(
        "run",
        help="train every combination of a preset (resumable; complete runs are skipped)",
        description="Train every method x dataset x backbone x seed of a preset from\n"
        "benchmark.toml, with command-line overrides. Complete runs are skipped; an\n"
        "interrupted run resumes from its last epoch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _selection(run)
    _data_arguments(run, "OOD test sets to score, e.g. svhn,cifar100")
    _shift_arguments(run)
    run.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets through torchvision (needs a network)",
    )
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
        "--dry-run",
        action="store_true",
        help="list the runs it would train, resume or skip and their cost; write nothing",
    )
    _execution(run)
    _common(run)


def _selection(p: argparse.ArgumentParser) -> None:
    """The flags that choose a sweep's runs (``run``, and ``status`` to list them)."""
    p.add_argument("--preset", help="preset of benchmark.toml (default: its default_preset)")
    p.add_argument("--methods", type=comma_names, help="comma-separated method names or patterns")
    p.add_argument("--datasets", type=comma_names, help="comma-separated dataset names")
    p.add_argument(
        "--backbones",
        type=comma_names,
        help="comma-separated backbones (default: each dataset's own; timm/<name> works)",
    )
    p.add_argument("--seeds", type=comma_ints, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument(
        "--epochs",
        type=count(Ge(0)),
        help="epochs per run; lr milestones scale with it (0 with --set training.pretrained=true: "
        "store timm's pretrained weights as a run, untrained)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME.PARAM=VALUE",
        help="override a method hyperparameter (rankmixup_mrl.margin=1.0) or a "
        "training setting (training.lr=0.05, training.precision=bf16, "
        "training.channels_last=false; docs/speed.md for the fast path); a,b,c is a grid",
    )


def _execution(run: argparse.ArgumentParser) -> None:
    """Where and how ``run`` trains: executor, devices, processes per run, logging."""
    run.add_argument(
        "--executor",
        choices=["local", "processes", "slurm"],
        default="local",
        help="local: one run after another in this process (default); processes: one worker "
        "process per device of --devices; slurm: one job per run through submitit ([slurm] in "
        "benchmark.toml)",
    )
    run.add_argument(
        "--devices", type=comma_names, help="the processes executor's (default: all GPUs)"
    )
    run.add_argument(
        "--log",
        choices=["tensorboard"],
        help="also log every epoch's loss terms and validation metrics to "
        "<output>/tensorboard/<run> (needs the tensorboard package)",
    )
    run.add_argument(
        "--runs-per-device",
        type=POSITIVE_INT,
        default=1,
        help="processes executor: runs trained at once on each device (small models fill a "
        "large GPU only several at a time; default 1)",
    )
    run.add_argument(
        "--gpus-per-run",
        type=POSITIVE_INT,
        metavar="N",
        help="processes (one GPU each, or CPU processes with --device cpu) that train each run "
        "together with DistributedDataParallel: start the command with torchrun "
        "--nproc_per_node N, or use --executor slurm (default 1; torchrun's WORLD_SIZE)",
    )


def add_report(sub: argparse._SubParsersAction) -> None:
    """The ``report`` command's arguments."""
    report = sub.add_parser(
        "report",
        help="build tables and reliability diagrams from the store",
        description="Rebuild <output>/report/ from the stored logits.",
    )
    report.add_argument(
        "--format",
        type=comma_names,
        default=["md", "csv", "html"],
        help="comma-separated: md, csv, tex, html (default md,csv,html)",
    )
    report.add_argument(
        "--compare",
        type=comma_names,
        default=[],
        metavar="published",
        help="show published numbers (calibench/report/published.csv) beside the measured ones",
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
        type=comma_names,
        help="post-hoc calibrators fitted on each run's validation logits for the method x "
        "calibrator and shift tables (default: all of `calibench list calibrators`; none: off)",
    )
    _common(report)


def add_bench(sub: argparse._SubParsersAction) -> None:
    """The ``bench`` command's arguments."""
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
    bench.add_argument("--methods", type=comma_names, help="methods to time (default: all)")
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
        "--batch-size", type=POSITIVE_INT, default=128, help="images per batch (default 128)"
    )
    bench.add_argument(
        "--steps",
        type=POSITIVE_INT,
        default=20,
        help="timed steps per method (default 20); with --against, per block and path",
    )
    bench.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    bench.add_argument(
        "--against",
        choices=["reference"],
        help="compare calibench's training pipeline with the reference pipeline",
    )
    _against_reference(bench)
    bench.add_argument("--plugins", nargs="+", default=[], metavar="DIR")
    bench.add_argument("--config", type=Path)


def _against_reference(bench: argparse.ArgumentParser) -> None:
    """The ``bench`` flags that apply only with ``--against reference``."""
    from calibench.spec import PRECISIONS

    flags: dict[str, dict] = {
        "--blocks": dict(
            type=POSITIVE_INT,
            default=5,
            help="alternating block pairs, medians taken over them (default 5)",
        ),
        "--precision": dict(
            choices=PRECISIONS,
            default="fp32",
            help="calibench's precision (the reference is always fp32)",
        ),
        "--fast": dict(
            default="auto",
            metavar="SWITCHES",
            help="calibench's fast path: auto (default, the device's measured defaults), plain, "
            "or a comma-separated list of channels_last, compile, fuse_views (docs/speed.md)",
        ),
        "--num-workers": dict(
            type=int, help="the reference's DataLoader workers (default min(4, cpu count))"
        ),
        "--peak-tflops": dict(
            type=float,
            help="the device's peak TFLOP/s for MFU (default: the datasheet table of "
            "docs/speed.md, CUDA only)",
        ),
        "--data-root": dict(help="dataset folder (default as for calibench run)"),
        "--json": dict(action="store_true", help="print JSON instead of the table"),
        "--output": dict(type=Path, metavar="FILE", help="also write the JSON here"),
    }
    for flag, options in flags.items():
        bench.add_argument(flag, **{**options, "help": f"with --against: {options['help']}"})


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` command's arguments."""
    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate stored runs under dataset shift, or store weights as a run, no training",
        description="--shift: store every complete run's logits on the corrupted test sets.\n"
        "--checkpoint FILE: store a state_dict of --backbone on --dataset as a run.",
        epilog="examples:\n  calibench evaluate --shift cifar10-c --output results\n"
        "  calibench evaluate --shift corrupt --corruptions gaussian_noise,contrast\n"
        "  calibench evaluate --checkpoint weights.pt --backbone resnet50 --dataset cifar10\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _shift_arguments(evaluate)
    evaluate.add_argument("--checkpoint", type=Path, metavar="FILE", help="a state_dict file")
    evaluate.add_argument("--backbone", help="with --checkpoint: the weights' backbone")
    evaluate.add_argument("--dataset", help="with --checkpoint: the dataset they were trained on")
    evaluate.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="training.PARAM=VALUE",
        help="with --checkpoint: an evaluation setting (training.eval_batch_size=256); repeatable",
    )
    _data_arguments(evaluate, "with --checkpoint: OOD test sets")
    evaluate.add_argument(
        "--methods", type=comma_names, help="only these methods (names or patterns)"
    )
    evaluate.add_argument("--datasets", type=comma_names, help="only runs on these datasets")
    evaluate.add_argument("--force", action="store_true", help="recompute what is stored already")
    _common(evaluate)


def add_compare(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` command's arguments."""
    compare = sub.add_parser(
        "compare",
        help="is method A better than method B beyond the noise? (paired over seeds)",
        description="Compare two methods of a results folder on one metric, per dataset and\n"
        "backbone, over the seeds both were trained with, by the rule that marks the report's\n"
        "tables (docs/statistics.md): the mean difference A - B, its 95% t-interval over\n"
        "seeds and the paired t-test's verdict; n/a with one seed (training noise is not\n"
        "measured). A paired bootstrap over test samples (acc, nll, brier and the binned\n"
        "calibration errors) is shown as information, never as the verdict.",
        epilog="examples:\n  calibench compare rankmixup_mndcg ce\n"
        "  calibench compare focal ce --metric ece_ts --output results/digits-3seeds\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("a", help="method A")
    compare.add_argument("b", help="method B")
    compare.add_argument("--metric", default="ece", help="metric column (default ece)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of text")
    _output(compare)


def add_init(sub: argparse._SubParsersAction) -> None:
    """The ``init`` command's arguments."""
    init = sub.add_parser(
        "init",
        help="write a copy of the default settings to ./benchmark.toml to edit",
        description="Write the packaged default settings (presets, protocols, method "
        "hyperparameters) to ./benchmark.toml, which every command then reads. An existing "
        "file is kept unless --force.",
    )
    init.add_argument("--force", action="store_true", help="overwrite ./benchmark.toml")


def add_status(sub: argparse._SubParsersAction) -> None:
    """The ``status`` command's arguments."""
    status = sub.add_parser(
        "status",
        help="list the runs of a results folder (complete, running, failed, interrupted), or "
        "of a selection with its pending runs",
        description="One line per run in <output>: its status, last epoch, and the error of a "
        "failed run; a run whose process died shows as interrupted. Rebuilds the index from "
        "the run folders when it is missing (--rebuild forces it). With the selection flags "
        "of `calibench run` (--preset, --methods, --datasets, --backbones, --seeds, --epochs, "
        "--set), it lists that sweep's runs instead, those not started yet as pending.",
    )
    status.add_argument(
        "--rebuild", action="store_true", help="rebuild calibench.db from the run folders first"
    )
    _selection(status)
    _common(status)


def add_list(sub: argparse._SubParsersAction) -> None:
    """The ``list`` command's arguments."""
    listing = sub.add_parser(
        "list", help="list methods, datasets, backbones, presets or calibrators"
    )
    listing.add_argument(
        "what", choices=["methods", "datasets", "backbones", "presets", "calibrators"]
    )
    listing.add_argument("--plugins", nargs="+", default=[], metavar="DIR")
    listing.add_argument("--config", type=Path)


def _data_arguments(p: argparse.ArgumentParser, ood: str) -> None:
    """Where the data comes from and where the model runs: --ood, --data-root, --device."""
    p.add_argument("--ood", type=comma_names, help=ood)
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def _shift_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--shift",
        choices=LazyChoices("calibench.shift", "SHIFTS"),
        metavar="SET",
        required=required,
        help="evaluate the selected model on a corrupted test set: the official cifar10-c, "
        "cifar100-c, tiny_imagenet-c or imagenet-c files under the data root, or `corrupt` "
        "for calibench's generated corruptions of the run's dataset (5 severities each)",
    )
    p.add_argument(
        "--corruptions", type=comma_names, help="only these corruptions of the shift (default: all)"
    )


def add_metrics(sub: argparse._SubParsersAction) -> None:
    """The ``metrics`` command's arguments."""
    from calibench.spec import TEMPERATURE_FITS

    metrics = sub.add_parser(
        "metrics",
        help="calibration metrics of any logits file (.npy, .npz, .pt, .csv)",
        description="Every metric of calibench.evaluation.metrics.calibration_metrics for\n"
        "logits saved by any code; temperature scaling too when validation logits are given\n"
        "(or stored in the .npz as val_logits/val_labels). A run's logits.npz needs no\n"
        "other flag.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    metrics.add_argument("logits", type=Path, metavar="LOGITS", help="(N, K) logits file")
    metrics.add_argument("--labels", type=Path, help="(N,) class indices (default: in LOGITS)")
    metrics.add_argument("--val-logits", type=Path, help="validation logits to fit T on")
    metrics.add_argument("--val-labels", type=Path, help="validation labels")
    metrics.add_argument(
        "--n-bins",
        type=count(Interval(1, MAX_BINS)),
        default=15,
        help="bins of the ECE-like metrics (15)",
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
        "--plugins", nargs="+", default=[], metavar="DIR", help="extra folders of method files"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="settings file, layered on the packaged defaults (default ./benchmark.toml if "
        "there is one; `calibench init` writes a full copy to edit)",
    )
