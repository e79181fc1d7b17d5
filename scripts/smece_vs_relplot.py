"""calibench's smooth ECE against relplot's on stored runs (docs/metrics.md, "smece").

For every run of a store (each ``runs/**/logits.npz`` with its ``metrics.json``) the test
set's top-label confidences are scored twice, by calibench.evaluation.metrics.smooth_ece and by
relplot.smECE (the authors' package, Blasiok & Nakkiran, ICLR 2024), before temperature
scaling and after it (the run's own fitted T from metrics.json). The gap is relplot minus
calibench; the table gives its largest and mean absolute value over the runs, the mean signed
gap, and the share of confidences above 0.999 (where the two discretisations differ most).
The calibench values are also checked against the smece and smece_ts that the run recorded.

    python scripts/smece_vs_relplot.py [STORE] [--runs]
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import relplot

from calibench.evaluation.metrics import smooth_ece_from_confidence, softmax, top_label

STAGES = {"raw": "smece", "ts": "smece_ts"}


def score_run(run: Path) -> list[dict]:
    """One row per stage (raw, ts) of the run in folder ``run``: both smooth ECEs, their gap,
    calibench's difference from the recorded metric and the share of confidences above 0.999."""
    logits = np.load(run / "logits.npz")
    metrics = json.loads((run / "metrics.json").read_text())
    temperatures = {"raw": 1.0, "ts": float(metrics["temperature"])}
    rows = []
    for stage, t in temperatures.items():
        probs = softmax(np.asarray(logits["test_logits"], dtype=np.float64) / t)
        conf, correct = top_label(probs, logits["test_labels"])
        ours = smooth_ece_from_confidence(conf, correct)[0]
        theirs = float(relplot.smECE(conf, correct))
        rows.append(
            {
                "run": str(run.relative_to(run.parents[3])),
                "stage": stage,
                "temperature": t,
                "n": len(conf),
                "above_0.999": float(np.mean(conf > 0.999)),
                "calibench": ours,
                "relplot": theirs,
                "gap": theirs - ours,
                "vs_recorded": ours - float(metrics[STAGES[stage]]),
            }
        )
    return rows


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per stage: runs, max and mean |gap|, mean signed gap, the run with the largest gap, the
    mean share above 0.999, and the largest difference from the recorded metric."""
    rows = []
    for stage, group in table.groupby("stage", sort=False):
        worst = group.loc[group["gap"].abs().idxmax()]
        rows.append(
            {
                "stage": stage,
                "runs": len(group),
                "max abs gap": group["gap"].abs().max(),
                "mean abs gap": group["gap"].abs().mean(),
                "mean gap": group["gap"].mean(),
                "largest at": f"{worst['run']} ({worst['gap']:+.5f})",
                "mean share > 0.999": group["above_0.999"].mean(),
                "max abs(calibench - recorded)": f"{group['vs_recorded'].abs().max():.1e}",
            }
        )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a markdown table, floats to 5 decimals."""

    def cell(value: object) -> str:
        return f"{value:.5f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", default="results/digits-3seeds", type=Path)
    parser.add_argument("--runs", action="store_true", help="also print every run's row")
    args = parser.parse_args()
    runs = sorted(p.parent for p in args.store.glob("runs/**/logits.npz"))
    if not runs:
        raise SystemExit(f"no runs/**/logits.npz under {args.store}")
    table = pd.DataFrame([row for run in runs for row in score_run(run)])
    if args.runs:
        print(markdown(table))
        print()
    print(f"{args.store}: calibench vs relplot {version('relplot')}, gap = relplot - calibench")
    print(markdown(summarise(table)))


if __name__ == "__main__":
    main()
