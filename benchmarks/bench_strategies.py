"""Strategies vs random search on benchmark ground truth (the library behind `nas bench strategies`).

    python benchmarks/bench_strategies.py --space nats_sss [--seeds 20] [--budgets 50,100,300]
                                          [--strategies evolution,tpe] [--plot P.png] [--json]

Every strategy searches with the `tabular` evaluator (ground-truth CIFAR-10 accuracy) under a latency
bound (nats_sss: pixel1 model <= 10 ms; nb201: NASLib's 724 archs, measured pixel3 <= 14 ms) for
`--seeds` seeds; single-objective ones are scored by the best feasible accuracy found, multi-objective
ones by the hypervolume of (accuracy, latency) against a fixed reference; a two-sided Mann-Whitney U test
compares each with random search at the same budget. See nas/bench/strategies.py.
"""
from __future__ import annotations

import argparse
import json

from nas.bench.strategies import format_strategies, plot_strategies, strategy_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="nats_sss", choices=("nats_sss", "nb201"))
    ap.add_argument("--strategies", help="comma-separated (default: evolution,tpe,zero-cost,nsga2,optuna-nsga2)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", default="50,100,300")
    ap.add_argument("--plot", help="PNG of best accuracy and hypervolume vs evaluations")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = strategy_benchmark(args.space, strategies=args.strategies.split(",") if args.strategies else None,
                                seeds=args.seeds, budgets=[int(b) for b in args.budgets.split(",")])
    if args.plot:
        plot_strategies(result, args.plot)
    print(json.dumps(result, indent=1) if args.json else format_strategies(result))


if __name__ == "__main__":
    main()
