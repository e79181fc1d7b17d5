"""The GPU check: its script's commands, the epoch plan, the summary, and its steps run small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calibench.bench import gpu_check
from calibench.bench.compare import compare_with_reference, write_comparison
from calibench.cli import main as cli_main
from calibench.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

STUB = """#!{python}
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "-c":
    print("cuda 13.0 | available True | cpus 2")
elif sys.argv[1:4] == ["-m", "calibench.bench.gpu_check", "plan"]:
    print(2)
"""


def _script_commands(tmp_path: Path, *args: str) -> list[list[str]]:
    """Run the script with a stand-in python that records its arguments; return them."""
    log = tmp_path / "calls.jsonl"
    stub = tmp_path / "python"
    stub.write_text(STUB.format(python=sys.executable, log=str(log)))
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "GPU_CHECK_OUTPUT": str(tmp_path / "out")}
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("mode", [(), ("--rehearsal",)])
def test_every_command_of_the_script_is_a_valid_invocation(tmp_path, mode):
    calls = _script_commands(tmp_path, *mode)
    cli = [build_parser().parse_args(c[2:]) for c in calls if c[:2] == ["-m", "calibench.cli"]]
    benches = [a for a in cli if a.command == "bench"]
    assert len(benches) == 8 and all(a.against == "reference" for a in benches)
    plain = [a for a in benches if a.fast == "plain"]
    assert sorted(a.precision for a in plain) == ["bf16", "bf16", "fp32", "fp32"]
    fast = [(a.backbone, a.precision, a.fast, tuple(a.methods)) for a in benches if a not in plain]
    assert sorted(f[2] for f in fast) == ["channels_last"] * 2 + ["channels_last,fuse_views"] * 2
    assert {f[3] for f in fast} == {("ce", "rankmixup_mndcg")}
    runs = [a for a in cli if a.command == "run"]
    assert [a.epochs for a in runs] == [1, 2]  # the measured epoch, then the planned ones
    assert all(a.preset == "fashion" for a in runs)
    assert [a.command for a in cli].count("report") == 1
    modules = [c[1] for c in calls if c[0] == "-m"]
    assert modules.count("calibench.bench.gpu_check") == 2  # plan, summary
    if mode:
        assert {a.device for a in benches + runs} == {"cpu"}
    else:
        assert {a.device for a in benches + runs} == {"cuda"}
        assert {(a.dataset, a.backbone, a.batch_size) for a in benches} == {
            ("cifar10", "resnet50", 128),
            ("fashion_mnist", "small_resnet", 128),
        }
        assert {tuple(a.methods) for a in plain} == {
            ("ce", "mixup", "rankmixup_mrl", "rankmixup_mndcg")
        }
        assert {(f[0], f[1]) for f in fast} == {("resnet50", "bf16"), ("small_resnet", "fp32")}
    steps = (tmp_path / "out" / "steps.tsv").read_text().splitlines()
    assert [s.split("\t")[0] for s in steps][-3:] == [
        "fashion-first-epoch",
        "fashion",
        "fashion-report",
    ]


@pytest.mark.parametrize(
    "method, images", [("ce", 1), ("mixup", 1), ("rankmixup_mrl", 2), ("rankmixup_mndcg", 4)]
)
def test_images_through_the_model_per_input_image(method, images):
    assert gpu_check.images_per_input(method) == images


def test_epoch_plan_fits_the_budget():
    # 10 s start-up, 3 runs of 2 s overhead, 1 s per epoch of cost 1 + 2 + 4
    assert gpu_check.plan_epochs(100, 10, 2, 1.0, [1, 2, 4]) == 12
    assert gpu_check.plan_epochs(1e6, 10, 2, 1.0, [1, 2, 4], max_epochs=30) == 30
    assert gpu_check.plan_epochs(5, 10, 2, 1.0, [1, 2, 4]) == 1


def test_the_rehearsal_steps_in_one_process(tmp_path, capsys):
    """bench against the reference, one measured epoch, the plan, the run, report, summary."""
    out = tmp_path / "check"
    comparison = compare_with_reference(
        ["ce"], "cifar10", "small_cnn", 8, 1, 1, torch.device("cpu"), "bf16", 0, str(tmp_path)
    )
    write_comparison(comparison, out / "bench-cifar10-small_cnn-bf16.json")
    store = out / "fashion"
    run = ["run", "--preset", "fashion", "--datasets", "digits", "--backbones", "small_cnn"]
    run += ["--device", "cpu", "--output", str(store), "--methods", "ce", "--epochs", "1"]
    assert cli_main(run) == 0
    capsys.readouterr()
    assert gpu_check.main(["plan", "--budget", "60", "--command-seconds", "5", "--store",
                           str(store), "--methods", "ce", "--max-epochs", "1"]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == "1"
    assert cli_main(["report", "--output", str(store), "--format", "csv"]) == 0
    (out / "steps.tsv").write_text("bench-cifar10-small_cnn-bf16\t0\t3\n")
    summary = gpu_check.write_summary(out).read_text()
    row = comparison.rows[0]
    assert (
        f"| cifar10 | small_cnn | synthetic | bf16 | {comparison.setup['fast_path']} | ce | "
        f"{row.calibench.images_per_s:.0f} |" in (summary)
    )
    assert "| ce | digits | small_cnn | 1 |" in summary
    assert "| bench-cifar10-small_cnn-bf16 | 0 | 3 |" in summary


def test_full_run_estimate_counts_full_batches_only():
    assert gpu_check.full_run_hours(128 * 351 / 3600, 200, 45_000, 128) == pytest.approx(200)
    doc = {
        "backbone": "resnet50",
        "device_name": "GPU X",
        "precision": "bf16",
        "fast_path": "channels_last",
        "batch_size": 128,
        "methods": [
            {
                "method": "rankmixup_mndcg",
                "calibench": {"images_per_s": 2 * 128 * 351 * 200 / 3600},
                "reference": {"images_per_s": 128 * 351 * 200 / 3600},
            }
        ],
    }
    (line,) = gpu_check.estimate_lines(doc)
    assert "200 epochs x 351 steps of 128" in line
    assert "calibench 0.5 h, reference 1.0 h" in line
    assert gpu_check.estimate_lines(doc, "ce") == []


def test_summary_sets_each_fast_path_bench_against_the_plain_one(tmp_path):
    def doc(fast, ips):
        path = {"images_per_s": ips, "peak_memory_bytes": None, "mfu": None}
        return {
            "dataset": "cifar10",
            "backbone": "resnet50",
            "data": "synthetic",
            "precision": "bf16",
            "device_name": "GPU X",
            "fast_path": fast,
            "methods": [
                {
                    "method": "ce",
                    "ratio": 2.0,
                    "calibench": path,
                    "reference": {**path, "images_per_s": 1.0},
                }
            ],
        }

    (tmp_path / "bench-a.json").write_text(json.dumps(doc("plain", 100.0)))
    (tmp_path / "bench-b.json").write_text(json.dumps(doc("channels_last", 150.0)))
    summary = gpu_check.write_summary(tmp_path).read_text()
    assert "| cifar10 | resnet50 | bf16 | ce | channels_last | 100 | 150 | 1.50x |" in summary
