"""Does int8 change which nets are fast? Float and int8 latency of sampled archs on this machine, side by side.

Predicts `--samples` random archs with the `cpu` and `cpu-int8` tables (profiled on first use) and prints
the quantiles of both, of their ratio, and the Spearman rank correlation between them (1: int8 keeps
the float ranking).

    python benchmarks/int8_rank.py --space mbconv --samples 3000
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from latency.targets import lut_model
from search_spaces.catalog import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv")
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    space = get_space(args.space)
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.samples)]
    f = lut_model("cpu", space).predict_many(archs)
    q = lut_model("cpu-int8", space).predict_many(archs)
    print(f"space {args.space}: {args.samples} random archs (seed {args.seed}), predicted ms on cpu and cpu-int8")
    print(f"{'':16}{'p10':>8}{'p50':>8}{'p90':>8}")
    for name, v in (("float (cpu)", f), ("int8 (cpu-int8)", q), ("int8 / float", q / f)):
        print(f"{name:16}" + "".join(f"{x:>8.3f}" for x in np.percentile(v, [10, 50, 90])))
    print(f"Spearman(float, int8) = {spearmanr(f, q).statistic:.3f}")


if __name__ == "__main__":
    main()
