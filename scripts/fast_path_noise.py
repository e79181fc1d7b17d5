"""Is a fast-path switch within seed noise? (docs/speed.md, "Fast-path defaults")

Two stores of the same suite, trained with the switch off (A) and on (B), are paired run by run
(method, dataset, backbone, seed). For each method and metric the table gives both means over
seeds, the seed-to-seed standard deviation of A (the noise) and the mean paired difference
B - A; the last rows pool every pair: the Student t interval of the mean difference
(calibench.evaluation.compare.seed_interval) and how many methods moved by more than one seed sd.

    python scripts/fast_path_noise.py STORE_A STORE_B [--metrics acc,ece,ece_ts]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from calibench.evaluation.compare import seed_interval
from calibench.report.collect import collect
from calibench.store.index import Store

KEYS = ["method", "dataset", "backbone", "seed"]


def paired(a: Path, b: Path, metrics: list[str]) -> pd.DataFrame:
    tables = [collect(Store(path))[0][KEYS + metrics] for path in (a, b)]
    return tables[0].merge(tables[1], on=KEYS, suffixes=("_a", "_b"), validate="one_to_one")


def report(pairs: pd.DataFrame, metrics: list[str], names: tuple[str, str]) -> str:
    lines = [
        f"| method | metric | {names[0]} mean | {names[1]} mean | seed sd ({names[0]}) "
        f"| mean diff ({names[1]} - {names[0]}) | beyond 1 sd |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    beyond = dict.fromkeys(metrics, 0)
    for method, group in pairs.groupby("method"):
        for m in metrics:
            sd = group[f"{m}_a"].std(ddof=1)
            diff = (group[f"{m}_b"] - group[f"{m}_a"]).mean()
            out = abs(diff) > sd
            beyond[m] += out
            lines.append(
                f"| {method} | {m} | {group[f'{m}_a'].mean():.4f} | {group[f'{m}_b'].mean():.4f} "
                f"| {sd:.4f} | {diff:+.4f} | {'yes' if out else 'no'} |"
            )
    lines.append("")
    n_methods = pairs["method"].nunique()
    for m in metrics:
        diff = pairs[f"{m}_b"] - pairs[f"{m}_a"]
        low, high = seed_interval(diff)
        lines.append(
            f"- {m}: {len(pairs)} pairs, mean difference {diff.mean():+.4f}, "
            f"95% t interval [{low:+.4f}, {high:+.4f}]; {beyond[m]} of {n_methods} methods "
            "moved by more than one seed sd"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="store trained with the switch off")
    parser.add_argument("b", type=Path, help="store trained with the switch on")
    parser.add_argument("--names", nargs=2, default=["off", "on"], metavar=("A", "B"))
    parser.add_argument("--metrics", default="acc,ece,ece_ts")
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    print(report(paired(args.a, args.b, metrics), metrics, tuple(args.names)))


if __name__ == "__main__":
    main()
