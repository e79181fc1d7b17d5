"""Power and false-positive rate of calibench's verdict rule, by simulation (docs/statistics.md,
"Power and false positives").

    python scripts/verdict_power.py            # the published tables (fixed seed)
    python scripts/verdict_power.py --draws 2000 --seed 1

A table of k methods x n seeds is simulated as value = effect of the method + noise, the noise
independent N(0, 1) per method and seed: one unit is one seed standard deviation, and no seed
effect is shared between methods (shared effects cancel in the block design, so this is the
hardest case). Every draw is judged by the functions that mark the report's tables and decide
`calibench compare` (calibench.evaluation.blocks, used by calibench.evaluation.compare):

- false positives: all k methods identical; how often any mark other than "tied" appears (for
  k = 2: how often `compare` calls a winner), with equal noise and with one method three times
  as noisy as the others (unequal noise, which the pooled variance does not model);
- power "best": one method d better than the k - 1 others (which are equal); how often it is
  marked best. The minimum detectable effect (MDE) is the d marked at 80% power;
- power "worse": one method d worse than the k - 1 others; how often it is left unmarked (not
  tied for best).

The MDE is found by bisection on d with the same noise draws at every d.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from calibench.evaluation.blocks import holm_adjust, mark_codes, pairwise_t
from calibench.evaluation.compare import ALPHA

SEEDS = (2, 3, 5, 10)
METHODS = (2, 5, 13)
POWER = 0.8


def judge(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marks (codes 2 best, 1 tied, 0 none; lower is better) and pairwise significance of every
    draw of ``values`` (draws, k, n), by THE rule."""
    _, _, p, _ = pairwise_t(values)
    significant = holm_adjust(p) <= ALPHA
    return mark_codes(values.mean(axis=-1), significant, lower_is_better=True), significant


def false_positives(noise: np.ndarray) -> tuple[float, float]:
    """Identical methods: the rate of any mark other than tied, with equal noise and with
    method 0 three times as noisy as the others."""
    scale = np.ones(noise.shape[1])
    scale[0] = 3.0
    equal, _ = judge(noise)
    unequal, _ = judge(noise * scale[:, None])
    return float(np.mean((equal != 1).any(axis=-1))), float(np.mean((unequal != 1).any(axis=-1)))


def power(noise: np.ndarray, d: float, scenario: str) -> float:
    """The rate at which method 0, d seed SDs better ("best") or worse ("worse") than the other
    k - 1 methods, is marked best, or left unmarked."""
    effect = np.zeros(noise.shape[1])
    effect[0] = -d if scenario == "best" else d
    codes, _ = judge(noise + effect[:, None])
    return float(np.mean(codes[:, 0] == (2 if scenario == "best" else 0)))


def leader_only_false_positives(noise: np.ndarray) -> float:
    """Identical methods judged by the alternative of comparing only the best mean with the
    k - 1 others (pooled t-tests, Holm over those k - 1): how often it calls the best mean
    significantly better than some other method. Not calibench's rule; printed to show why."""
    means = noise.mean(axis=-1)
    leader = means.argmin(axis=-1)
    _, _, p, _ = pairwise_t(noise)
    k = noise.shape[1]
    first, second = np.triu_indices(k, 1)
    matrix = np.ones((len(noise), k, k))
    matrix[:, first, second] = p
    matrix[:, second, first] = p
    row = np.take_along_axis(matrix, leader[:, None, None], axis=1)[:, 0, :]
    others = row[np.arange(k)[None, :] != leader[:, None]].reshape(len(noise), k - 1)
    return float(np.mean((holm_adjust(others) <= ALPHA).any(axis=-1)))


def minimum_detectable_effect(noise: np.ndarray, scenario: str, tol: float = 0.01) -> float:
    """The smallest d (to ``tol``) with power >= 80%, by bisection on [0, 256]."""
    low, high = 0.0, 256.0
    while high - low > tol:
        middle = (low + high) / 2
        low, high = (low, middle) if power(noise, middle, scenario) >= POWER else (middle, high)
    return high


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=10000, help="simulated tables per cell")
    parser.add_argument("--seed", type=int, default=0, help="numpy generator seed")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    noise = {(n, k): rng.standard_normal((args.draws, k, n)) for n in SEEDS for k in METHODS}
    fp_rows, mde_rows = [], []
    for n in SEEDS:
        fp_cells, mde_cells = [str(n)], [str(n)]
        for k in METHODS:
            equal, unequal = false_positives(noise[n, k])
            fp_cells.append(f"{100 * equal:.1f}% / {100 * unequal:.1f}%")
            best = minimum_detectable_effect(noise[n, k], "best")
            worse = minimum_detectable_effect(noise[n, k], "worse")
            mde_cells.append(f"{best:.1f} / {worse:.1f}")
        fp_rows.append(fp_cells)
        mde_rows.append(mde_cells)
    header = ["seeds n", *(f"k = {k}" for k in METHODS)]
    print(f"False positives, {args.draws} draws per cell (seed {args.seed}): any mark other "
          "than tied, equal noise / one method 3x as noisy")  # fmt: skip
    print(markdown(header, fp_rows))
    print(f"\nMinimum detectable effect at {100 * POWER:.0f}% power, in seed standard "
          "deviations: marked best / left unmarked")  # fmt: skip
    print(markdown(header, mde_rows))
    for scenario in ("best", "worse"):
        rate = power(noise[3, 13], 5.0, scenario)
        print(f"\nn = 3, k = 13, d = 5: power '{scenario}' {100 * rate:.1f}%", end="")
    for n, k in ((3, 5), (3, 13)):
        rate = leader_only_false_positives(noise[n, k])
        print(f"\nalternative, Holm over the best mean's k - 1 comparisons only, n = {n}, "
              f"k = {k}: false positives {100 * rate:.1f}%", end="")  # fmt: skip
    print(f"\n\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
