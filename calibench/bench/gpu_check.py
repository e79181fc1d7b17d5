"""Helpers of the GPU check (scripts/gpu_check.sh, docs/speed.md): the epoch count that fits the
time left, and the summary of everything the check wrote.

Usage, from the script::

    python -m calibench.bench.gpu_check plan --budget S --command-seconds W --store FOLDER
    python -m calibench.bench.gpu_check summary FOLDER            # writes FOLDER/SUMMARY.md
    python -m calibench.bench.gpu_check estimate BENCH.json       # a full paper-cifar10 run's hours
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import torch

from calibench.bench.steps import CachedLogits
from calibench.method import TrainingSetup, get_method, training_loss
from calibench.store.files import RunDir


def images_per_input(method: str, batch_size: int = 8, num_classes: int = 10) -> float:
    """How many images one training step of ``method`` passes through the model per input
    image (1 for CE, 2 for MRL, 1 + num_mixup for M-NDCG), counted with a stand-in model."""
    stub = CachedLogits(16 * batch_size, num_classes, torch.device("cpu"))
    x = torch.randn(batch_size, 1, 4, 4)
    y = torch.arange(batch_size) % num_classes
    m = get_method(method)
    m.setup(TrainingSetup(batch_size, num_classes))
    training_loss(m, stub, x, y, torch.arange(batch_size))
    return stub.samples / batch_size


def plan_epochs(
    budget_s: float,
    startup_s: float,
    run_overhead_s: float,
    epoch_s: float,
    costs: list[float],
    max_epochs: int = 30,
) -> int:
    """The most epochs N (1 to ``max_epochs``) for which a suite of runs fits in ``budget_s``
    seconds: ``startup_s`` once, then per run ``run_overhead_s`` (data, model, test evaluation)
    and N epochs of ``epoch_s`` times the run's cost (images through the model per input
    image, relative to the measured run's)."""
    per_epoch = max(epoch_s, 1e-9) * sum(costs)
    n = math.floor((budget_s - startup_s - run_overhead_s * len(costs)) / per_epoch)
    return max(1, min(max_epochs, n))


def measured_run(folder: Path) -> tuple[float, float]:
    """(epoch 1's seconds, the whole run's train_seconds) of the first run stored under
    ``folder``: its log.csv row for epoch 1 (training and validation) and its metrics.json."""
    for log in sorted(Path(folder).rglob(RunDir.LOG)):
        metrics = RunDir(log.parent) / RunDir.METRICS
        if not metrics.is_file():
            continue
        with log.open() as f:
            epochs = [row for row in csv.DictReader(f) if row.get("epoch") == "1"]
        if epochs:
            train_s = float(json.loads(metrics.read_text())["train_seconds"])
            return float(epochs[0]["seconds"]), train_s
    raise FileNotFoundError(f"no finished run with an epoch-1 log under {folder}")


PAPER_CIFAR10 = {"epochs": 200, "train_images": 45_000, "batch_size": 128}
"""The paper-cifar10 preset's training: 200 epochs over CIFAR-10's 50,000 training images less
the 5,000 held out for validation, in batches of 128 (docs/protocol.md)."""


def full_run_hours(images_per_s: float, epochs: int, train_images: int, batch_size: int) -> float:
    """Hours of training steps for ``epochs`` epochs of ``train_images // batch_size`` full
    batches (the loader drops the last partial one) at ``images_per_s`` input images per
    second; per-epoch validation and the final evaluation are not included."""
    steps = train_images // batch_size
    return epochs * steps * batch_size / images_per_s / 3600


def estimate_lines(doc: dict, method: str = "rankmixup_mndcg", **protocol: int) -> list[str]:
    """One line: the hours of a full run of ``method`` for each path, with the paper-cifar10
    protocol at the bench's batch size (each overridable through ``protocol``) and the
    images/s the bench document measured."""
    p = {**PAPER_CIFAR10, "batch_size": doc["batch_size"], **protocol}
    rows = [m for m in doc["methods"] if m["method"] == method]
    if not rows:
        return []
    setup = (
        f"{doc['backbone']}, {doc['device_name']}, calibench {doc['precision']} "
        f"({doc.get('fast_path', 'plain')})"
    )
    return [
        f"- {method}, {p['epochs']} epochs x {p['train_images'] // p['batch_size']} steps of "
        f"{p['batch_size']} ({setup}): calibench "
        f"{full_run_hours(rows[0]['calibench']['images_per_s'], **p):.1f} h, reference "
        f"{full_run_hours(rows[0]['reference']['images_per_s'], **p):.1f} h (training steps "
        "only)"
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _bench_lines(folder: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(folder.glob("bench-*.json")):
        doc = json.loads(path.read_text())
        if not lines:
            lines += [
                "| dataset | backbone | data | precision | fast path | method | calibench img/s | "
                "reference img/s | ratio | calibench MFU | reference MFU | calibench peak MiB "
                "| reference peak MiB |",
                "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
        for m in doc["methods"]:
            a, b = m["calibench"], m["reference"]
            mib = [None if p["peak_memory_bytes"] is None else p["peak_memory_bytes"] / 2**20
                   for p in (a, b)]  # fmt: skip
            mfu = [None if p["mfu"] is None else f"{100 * p['mfu']:.1f}%" for p in (a, b)]
            lines.append(
                f"| {doc['dataset']} | {doc['backbone']} | {doc['data']} | {doc['precision']} "
                f"| {doc.get('fast_path', 'plain')} | {m['method']} "
                f"| {a['images_per_s']:.0f} | {b['images_per_s']:.0f} "
                f"| {m['ratio']:.2f}x | {mfu[0] or '-'} | {mfu[1] or '-'} "
                f"| {_fmt(mib[0], '.0f')} | {_fmt(mib[1], '.0f')} |"
            )
    return lines


def _fast_path_lines(folder: Path) -> list[str]:
    """Each fast-path bench's calibench images/s over the plain bench's of the same dataset,
    backbone, precision and method: what decides the CUDA defaults of
    calibench/training/fast_path.py."""
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("bench-*.json"))]
    plain = {
        (d["dataset"], d["backbone"], d["precision"], m["method"]): m["calibench"]["images_per_s"]
        for d in docs
        if d.get("fast_path", "plain") == "plain"
        for m in d["methods"]
    }
    lines = []
    for d in docs:
        for m in d["methods"]:
            key = (d["dataset"], d["backbone"], d["precision"], m["method"])
            if d.get("fast_path", "plain") == "plain" or key not in plain:
                continue
            ips = m["calibench"]["images_per_s"]
            lines.append(
                f"| {' | '.join(key)} | {d['fast_path']} | {plain[key]:.0f} | {ips:.0f} "
                f"| {ips / plain[key]:.2f}x |"
            )
    if not lines:
        return []
    return [
        "| dataset | backbone | precision | method | fast path | plain img/s | fast img/s "
        "| speed-up |",
        "|---|---|---|---|---|---:|---:|---:|",
        *lines,
    ]


def _fashion_lines(folder: Path) -> list[str]:
    results = folder / "fashion" / "report" / "results.csv"
    if not results.is_file():
        return ["No report: the fashion step did not finish any run (see steps.tsv and logs)."]
    with results.open() as f:
        rows = list(csv.DictReader(f))
    lines = [
        "| method | dataset | backbone | epochs | acc % | ECE % | ECE after TS % |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['dataset']} | {r['backbone']} | {r['epochs']} "
            f"| {100 * float(r['acc']):.2f} | {100 * float(r['ece']):.2f} "
            f"| {100 * float(r['ece_ts']):.2f} |"
        )
    return lines


def write_summary(folder: Path) -> Path:
    """Write ``folder/SUMMARY.md``: the steps with their exit codes and seconds (steps.tsv), the
    bench comparisons (bench-*.json) and the fashion runs (fashion/report/results.csv)."""
    folder = Path(folder)
    lines = [f"# GPU check, {folder.name}", ""]
    env = folder / "env.txt"
    if env.is_file():
        lines += ["```", env.read_text().strip(), "```", ""]
    steps = folder / "steps.tsv"
    if steps.is_file():
        lines += ["## Steps", "", "| step | exit code | seconds |", "|---|---:|---:|"]
        for row in steps.read_text().splitlines():
            name, rc, seconds = (row.split("\t") + ["", ""])[:3]
            lines.append(f"| {name} | {rc} | {seconds} |")
        lines += ["", "Exit code 124: the step ran out of its time and was stopped.", ""]
    plan = folder / "fashion-plan.txt"
    lines += ["## calibench vs the reference pipeline", ""]
    lines += _bench_lines(folder) or ["No bench result was written."]
    estimates = [
        line
        for path in sorted(folder.glob("bench-cifar10-*.json"))
        for line in estimate_lines(json.loads(path.read_text()))
    ]
    if estimates:
        lines += ["", "A full paper-cifar10 run, estimated from these figures:", "", *estimates]
    fast = _fast_path_lines(folder)
    if fast:
        lines += ["", "## The fast path against the plain path (calibench only)", "", *fast]
    lines += ["", "## fashion preset", ""]
    if plan.is_file():
        lines += [plan.read_text().strip(), ""]
    lines += _fashion_lines(folder)
    out = folder / "SUMMARY.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibench.bench.gpu_check")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print the epochs that fit, from one measured run")
    plan.add_argument("--budget", type=float, required=True, help="seconds for the suite")
    plan.add_argument(
        "--command-seconds", type=float, required=True, help="wall time of the measured command"
    )
    plan.add_argument("--store", type=Path, required=True, help="its --output folder")
    plan.add_argument("--methods", default="*", help="comma-separated names or patterns")
    plan.add_argument("--max-epochs", type=int, default=30)
    sub.add_parser("summary", help="write FOLDER/SUMMARY.md").add_argument("folder", type=Path)
    estimate = sub.add_parser(
        "estimate", help="hours of a full paper-cifar10 run from a bench --against JSON"
    )
    estimate.add_argument("bench", type=Path, nargs="+", help="bench --against --output files")
    estimate.add_argument("--method", default="rankmixup_mndcg")
    estimate.add_argument("--epochs", type=int, default=PAPER_CIFAR10["epochs"])
    estimate.add_argument("--train-images", type=int, default=PAPER_CIFAR10["train_images"])
    args = parser.parse_args(argv)
    if args.command == "summary":
        print(write_summary(args.folder))
        return 0
    if args.command == "estimate":
        for path in args.bench:
            doc = json.loads(path.read_text())
            protocol = {"epochs": args.epochs, "train_images": args.train_images}
            print(
                "\n".join(estimate_lines(doc, args.method, **protocol))
                or f"{path}: no {args.method}"
            )
        return 0
    from calibench.config import expand_methods
    from calibench.plugins import discover_plugins

    discover_plugins()
    epoch_s, train_s = measured_run(args.store)
    costs = [images_per_input(m) for m in expand_methods(args.methods.split(","))]
    epochs = plan_epochs(
        args.budget,
        max(0.0, args.command_seconds - train_s),
        max(0.0, train_s - epoch_s),
        epoch_s,
        costs,
        args.max_epochs,
    )
    print(epochs)
    print(
        f"Epochs: {epochs}, planned to fit {args.budget:.0f} s from one epoch of the first run "
        f"({epoch_s:.1f} s of training and validation; {train_s:.1f} s the whole run, "
        f"{args.command_seconds:.0f} s the command) for {len(costs)} runs costing "
        f"{sum(costs):g} of its epochs per epoch.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
