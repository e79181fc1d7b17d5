"""The report's ablation section (calibench/report/sections.py): a preset's one-at-a-time
``vary`` grid runs end to end, and the report tables and draws each varied parameter (the grid's
expansion into run specs: tests/test_config.py)."""

from __future__ import annotations

import pandas as pd

from calibench.cli import main


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
