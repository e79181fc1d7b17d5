"""The command line end to end: run, report, list, and bad input."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

import calibench
from calibench.cli import main

REQUIRED_COLUMNS = {
    "method",
    "dataset",
    "backbone",
    "seed",
    "epochs",
    "acc",
    "nll",
    "brier",
    "ece",
    "adaece",
    "cece",
    "mce",
    "temperature",
    "acc_ts",
    "nll_ts",
    "ece_ts",
    "adaece_ts",
    "cece_ts",
}


@pytest.fixture(scope="module")
def results(trained, tmp_path_factory):
    """Every registered method trained for one epoch on digits: a copy of the shared store (ce
    and ls) where `calibench run` trains the others."""
    out = tmp_path_factory.mktemp("results") / "out"
    shutil.copytree(trained, out)
    assert main(["run", "--epochs", "1", "--device", "cpu", "--output", str(out)]) == 0
    return out


def test_run_then_report(results, capsys):
    assert main(["report", "--output", str(results), "--format", "md,csv,tex"]) == 0
    report = results / "report"
    with open(report / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert REQUIRED_COLUMNS <= set(rows[0])
    assert sorted(r["method"] for r in rows) == calibench.list_methods()
    for row in rows:
        assert 0 <= float(row["ece"]) <= 1 and 0 <= float(row["ece_ts"]) <= 1
        assert float(row["acc"]) == pytest.approx(float(row["acc_ts"]))
        assert float(row["acc"]) > 0.3
        assert row["epochs"] == "1"
    pngs = sorted(p.name for p in (report / "diagrams").glob("*.png"))
    assert len(pngs) == 2 * len(rows)
    for row in rows:
        stem = f"digits_small_cnn_{row['method']}_seed0_{row['run_id']}"
        assert {f"{stem}.png", f"{stem}_ts.png"} <= set(pngs)
    assert all((report / "diagrams" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    markdown = (report / "results.md").read_text()
    ece_percent = f"{100 * float(rows[0]['ece']):.2f}"
    assert ece_percent in markdown
    assert "\\begin{tabular}" in (report / "results.tex").read_text()
    assert "rankmixup_mndcg" in capsys.readouterr().out


def test_report_metrics_equal_the_stored_ones(results):
    """results.csv alone: no calibrators, no mixing diagnostic (test_run_then_report and
    test_damaged_run_folder_is_left_out_with_a_warning build the full report)."""
    import json

    argv = ["report", "--output", str(results), "--format", "csv", "--calibrators", "none"]
    assert main([*argv, "--mixing-samples", "0"]) == 0
    with open(results / "report" / "results.csv") as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    for metrics_file in results.glob("runs/**/metrics.json"):
        stored = json.loads(metrics_file.read_text())
        method = metrics_file.parent.parent.name
        for key in ("acc", "ece", "adaece", "cece", "temperature", "ece_ts"):
            assert float(rows[method][key]) == pytest.approx(stored[key], abs=1e-12)


def test_complete_runs_are_skipped(results, capsys):
    before = {p: p.stat().st_mtime_ns for p in results.glob("runs/**/metrics.json")}
    assert main(["run", "--epochs", "1", "--device", "cpu", "--output", str(results)]) == 0
    assert "skip ce / digits" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in results.glob("runs/**/metrics.json")}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--methods", "nope"], "unknown method 'nope'. Valid methods:"),
        (["run", "--datasets", "nope"], "unknown dataset 'nope'. Valid datasets:"),
        (["run", "--backbones", "nope"], "unknown backbone 'nope'. Valid backbones:"),
        (["run", "--set", "mbls.margin"], "is not NAME.PARAM=VALUE"),
        (["run", "--methods", "mbls", "--set", "mbls.margin=-2"], "margin must be >= 0"),
        (["run", "--plugins", "/no/such/folder"], "does not exist"),
        (["run", "--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_message(results, capsys, argv, message):
    before = (results / "calibench.db").read_bytes()
    assert main([*argv, "--output", str(results)]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err
    assert (results / "calibench.db").read_bytes() == before


def test_malformed_config_exits_2(tmp_path, capsys):
    bad = tmp_path / "benchmark.toml"
    bad.write_text("default_preset = \n")
    assert main(["run", "--config", str(bad), "--output", str(tmp_path / "out")]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_without_results_exits_2(tmp_path, capsys):
    assert main(["report", "--output", str(tmp_path)]) == 2
    assert "no results in" in capsys.readouterr().err


def test_list_commands(capsys):
    for what in ("methods", "datasets", "backbones", "presets"):
        assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert "rankmixup_mndcg(alpha=2.0, num_mixup=3, weight=0.1)" in out
    assert "digits" in out and "small_cnn" in out and "quick (default)" in out


def test_console_script_bad_input_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "calibench.cli",
            "run",
            "--methods",
            "nope",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown method 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "calibench.db").exists()


def test_fake_cifar10_flows_through_run_and_report(tmp_path, bypass_md5, capsys):
    """calibench run --datasets cifar10 --epochs 1 on files in the real CIFAR format, with
    OOD scoring against fake SVHN, then the report shows the OOD AUROC columns."""
    from fake_datasets import write_fake_cifar10, write_fake_svhn

    write_fake_cifar10(tmp_path / "data")
    write_fake_svhn(tmp_path / "data")
    out = tmp_path / "out"
    argv = [
        "run",
        "--datasets",
        "cifar10",
        "--methods",
        "ce,rankmixup_mrl",
        "--epochs",
        "1",
        "--backbones",
        "small_cnn",
        "--ood",
        "svhn",
        "--data-root",
        str(tmp_path / "data"),
        "--set",
        "training.batch_size=8",
        "--device",
        "cpu",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    assert main(["report", "--output", str(out)]) == 0
    with open(out / "report" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["dataset"] for r in rows} == {"cifar10"} and len(rows) == 2
    for row in rows:
        for column in (
            "ood_svhn_auroc_entropy",
            "ood_svhn_auroc_msp",
            "ood_svhn_auroc_entropy_ts",
            "ood_svhn_auroc_msp_ts",
        ):
            assert 0.0 <= float(row[column]) <= 1.0
    assert "ood_svhn_auroc_msp" in (out / "report" / "results.md").read_text()
    calibrated = list(csv.DictReader(open(out / "report" / "calibrators.csv")))
    for row in calibrated:
        assert 0.0 <= float(row["ood_svhn_auroc_msp"]) <= 1.0
    none = {r["method"]: r for r in calibrated if r["calibrator"] == "none"}
    for row in rows:
        assert float(none[row["method"]]["ood_svhn_auroc_msp"]) == pytest.approx(
            float(row["ood_svhn_auroc_msp"]), rel=1e-12
        )
    assert (
        "## ood_svhn_auroc_msp: cifar10 / small_cnn"
        in (out / "report" / "calibrators.md").read_text()
    )


def test_ood_set_of_another_shape_is_rejected(tmp_path, capsys):
    argv = ["run", "--datasets", "digits", "--ood", "cifar10", "--output", str(tmp_path)]
    assert main(argv) == 2
    assert "Pick an OOD set of the same shape" in capsys.readouterr().err


def test_missing_dataset_stores_nothing(tmp_path, capsys):
    argv = [
        "run",
        "--datasets",
        "cifar10",
        "--methods",
        "ce",
        "--data-root",
        str(tmp_path / "nodata"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "dataset 'cifar10' not found" in err and "--download" in err
    assert not (tmp_path / "out").exists()


def test_report_keeps_configurations_apart(tmp_path, capsys):
    out = str(tmp_path)
    for epochs in ("1", "2"):
        assert main(["run", "--methods", "ce", "--epochs", epochs, "--output", out]) == 0
    assert main(["report", "--output", out]) == 0
    with open(tmp_path / "report" / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert sorted(r["epochs"] for r in summary) == ["1", "2"]
    assert sorted(r["method"] for r in summary) == ["ce (epochs=1)", "ce (epochs=2)"]
    assert all(r["seeds"] == "1" for r in summary)


def test_damaged_run_folder_is_left_out_with_a_warning(results, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    victim = next(copy.glob("runs/**/logits.npz"))
    victim.write_bytes(b"not a zip file")
    assert main(["report", "--output", str(copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"warning: run folder {victim.parent} is damaged" in out
    with open(copy / "report" / "results.csv") as fh:
        methods = [r["method"] for r in csv.DictReader(fh)]
    assert victim.parent.parent.name not in methods
    assert len(methods) == len(calibench.list_methods()) - 1


def _tree(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_lists_the_runs_and_their_cost_and_creates_nothing(results, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    assert (
        main(["run", "--methods", "ce", "--epochs", "2", "--output", str(fresh), "--dry-run"]) == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    assert "pending │ train │ 0/2 │ 2 x 1,221 = 2,442" in out
    assert "1 runs: 1 train; 2,442 training images to go; no time estimate" in out
    assert not fresh.exists()

    before = _tree(results)
    argv = ["run", "--methods", "ce,focal", "--seeds", "0,1", "--epochs", "1"]
    assert main([*argv, "--output", str(results), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("complete │ skip │ 1/1") == 2 and out.count("pending │ train │ 0/1") == 2
    assert "4 runs: 2 skip, 2 train; 2,442 training images to go; about 0:00:" in out
    assert "at the store's measured epoch times" in out
    assert _tree(results) == before


def test_status_with_a_selection_lists_its_pending_runs(results, capsys):
    argv = ["status", "--methods", "ce", "--seeds", "0,1", "--epochs", "1"]
    assert main([*argv, "--output", str(results)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "complete │ skip │ 1/1 │ ce / digits / small_cnn / seed 0" in out
    assert "pending │ train │ 0/1 │ ce / digits / small_cnn / seed 1" in out
    assert "2 runs: 1 skip, 1 train" in out
    assert main(["status", "--output", str(results)]) == 0
    plain = capsys.readouterr().out
    assert "seed 1" not in plain and f"{len(calibench.list_methods())} complete" in plain


def test_run_logged_to_a_file_prints_a_line_per_epoch(tmp_path):
    argv = ["run", "--methods", "focal", "--set", "focal.gamma=1,3", "--epochs", "2"]
    argv += ["--device", "cpu", "--output", str(tmp_path / "out")]
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "calibench.cli", *argv],
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 4, text
    for line, (epoch, run, gamma) in zip(
        epochs, [(1, 1, "1.0"), (2, 1, "1.0"), (1, 2, "3.0"), (2, 2, "3.0")], strict=True
    ):
        assert line.startswith(
            f"epoch {epoch}/2 [{run}/2] focal / digits / small_cnn / seed 0 (gamma={gamma}): loss "
        )
        assert "val ECE" in line and "ETA run" in line and ", sweep " in line
    assert "\x1b[" not in text
