"""Ablation grids: --set grids and a preset's one-at-a-time ``vary`` tables expand into runs,
and the report tables and draws each varied parameter."""

from __future__ import annotations

import pandas as pd

from calibench.cli import main
from calibench.config import DEFAULT_CONFIG, Overrides, build_run_specs, load_config


def test_vary_is_one_parameter_at_a_time():
    config = load_config(DEFAULT_CONFIG)
    specs = build_run_specs(config, Overrides(preset="rankmixup-ablation"))
    mrl = [s.hparams for s in specs if s.method == "rankmixup_mrl"]
    defaults = {"margin": 2.0, "weight": 0.1, "alpha": 2.0}
    assert defaults in [{k: h[k] for k in defaults} for h in mrl]
    for h in mrl:
        assert sum(h[k] != v for k, v in defaults.items()) <= 1
    assert len(mrl) == 1 + 3 + 3 + 3
    assert {s.dataset for s in specs} == {"cifar10"} and len(specs) == 20


def test_digits_ablation_preset_runs_and_reports(tmp_path):
    out = tmp_path / "out"
    run = ["run", "--preset", "rankmixup-ablation-digits", "--device", "cpu"]
    assert main([*run, "--output", str(out)]) == 0
    report = ["report", "--format", "md,csv", "--calibrators", "none"]
    assert main([*report, "--output", str(out)]) == 0
    ablation = pd.read_csv(out / "report" / "ablation.csv", dtype={"value": str})
    mrl = ablation[ablation["method"] == "rankmixup_mrl"]["value"]
    assert sorted(mrl, key=float) == ["0.5", "1.0", "2.0", "4.0"]
    assert sorted(ablation[ablation["method"] == "rankmixup_mndcg"]["value"]) == list("1234")
    results = pd.read_csv(out / "report" / "results.csv")
    for _, row in ablation.iterrows():
        match = results[
            (results["method"] == row["method"])
            & results["hparams"].str.contains(f"{row['parameter']}={row['value']}", regex=False)
        ]
        assert row["ece"] == match["ece"].mean()
    figures = sorted(p.name for p in (out / "report" / "ablation").glob("*.png"))
    assert figures == [
        "digits_small_cnn_rankmixup_mndcg_num_mixup.png",
        "digits_small_cnn_rankmixup_mrl_margin.png",
    ]
    summary = (out / "report" / "results.md").read_text()
    assert "rankmixup_mrl (margin=0.5)" in summary
