"""Search quality at equal budget: hypervolume of the score-latency front, strategies vs random.

    python benchmarks/search_quality.py [--trials 100] [--seeds 3] [--strategies evolution,nsga2,tpe]
                                        [--evaluator zero-cost] [--evaluator-options '{"proxy": "synflow"}']

Every strategy gets the same evaluator (default: the `zero-cost` synflow proxy at 32x32, cheap
enough for a laptop; `--evaluator train` for real accuracies), the same LUT latency model
(`--target`, default the shipped `cpu` table of the full mbconv space) and the same number of
trials, for each seed. Objectives: maximise `score`, minimise `latency_ms`. The hypervolume of
each run's front is measured against one reference point shared by all runs (the worst score
and latency any run saw, pushed out by 1% of the range) and normalised by the box from the best
observed point to it, so 1.0 would be one point best at both. Reported per strategy: mean and
standard deviation of the normalised hypervolume over seeds, and the per-seed ratio to random
(mean and spread) - above 1 means a better front than random sampling at the same budget.
Evaluations are memoised per arch (the evaluators are deterministic), so strategies that visit
the same archs do not pay twice.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger("search_quality")
OBJECTIVES = (("score", True), ("latency_ms", False))


class Memo:
    """Cache an evaluator's metrics per arch (deterministic evaluators only)."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator, self.cache, self.calls = evaluator, {}, 0

    def __call__(self, arch: Any) -> dict[str, float]:
        if arch not in self.cache:
            self.calls += 1
            self.cache[arch] = self.evaluator(arch)
        return dict(self.cache[arch])


def run(space_name: str, space_options: dict[str, Any], target: str, strategies: list[str], trials: int,
        seeds: int, evaluator: str, evaluator_options: dict[str, Any], strategy_options: dict[str, Any],
        progress: bool) -> dict[str, Any]:
    from latency.targets import lut_model
    from nas.evaluators.base import Compose, LatencyEvaluator
    from nas.evaluators.catalog import make_evaluator
    from nas.pipeline.runner import run_search
    from nas.strategies.catalog import STRATEGIES
    from nas.strategies.nsga2 import hypervolume_2d, objective_matrix
    from search_spaces.catalog import get_space

    space = get_space(space_name, **space_options)
    memo = Memo(Compose([LatencyEvaluator({target: lut_model(target, space)}),
                         make_evaluator(evaluator, space, seed=0, **evaluator_options)]))
    names = ["random"] + [s for s in strategies if s != "random"]
    fronts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    seconds: dict[str, float] = {n: 0.0 for n in names}
    for seed in range(seeds):
        for name in names:
            cls = STRATEGIES.get(name)
            opts = dict(strategy_options.get(name, {}))
            if name in ("tpe",) and "objectives" not in opts:
                opts["objectives"] = OBJECTIVES  # MOTPE: the same two objectives as NSGA-II
            t0 = time.perf_counter()
            done = run_search(cls(space, seed=seed, **opts), memo, trials, progress=progress)
            seconds[name] += time.perf_counter() - t0
            fronts[name].append(objective_matrix(done, OBJECTIVES)[1])
            log.info("seed %d %s: %d evaluations so far", seed, name, memo.calls)
    every = np.concatenate([f for runs in fronts.values() for f in runs])
    lo, hi = every.min(0), every.max(0)
    ref = hi + 0.01 * (hi - lo)
    box = float(np.prod(ref - lo))
    hv = {n: np.array([hypervolume_2d(f, ref) / box for f in runs]) for n, runs in fronts.items()}
    table = {}
    for n in names:
        ratio = hv[n] / hv["random"]
        table[n] = {"hv_mean": float(hv[n].mean()), "hv_std": float(hv[n].std()),
                    "ratio_vs_random_mean": float(ratio.mean()), "ratio_vs_random_std": float(ratio.std()),
                    "ratio_per_seed": [round(float(r), 4) for r in ratio], "seconds": seconds[n]}
    return {"space": space_name, "space_options": space.options(), "target": target, "evaluator": evaluator,
            "evaluator_options": evaluator_options, "trials": trials, "seeds": seeds,
            "distinct_archs_evaluated": memo.calls, "reference_point": ref.tolist(), "strategies": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv")
    ap.add_argument("--space-options", default="{}", help="JSON object (must match the target's latency table)")
    ap.add_argument("--target", default="cpu", help="latency target or table file")
    ap.add_argument("--strategies", default="evolution,nsga2,tpe,optuna-nsga2",
                    help="comma-separated; random is always the baseline")
    ap.add_argument("--strategy-options", default='{"nsga2": {"population": 20}, "optuna-nsga2": {"population": 20}}',
                    help="JSON object: strategy name -> options")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluator", default="zero-cost")
    ap.add_argument("--evaluator-options", default='{"proxy": "synflow", "resolution": 32, "batch": 8}',
                    help="JSON object")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--progress", action="store_true", help="a progress bar per run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = run(args.space, json.loads(args.space_options), args.target,
              [s.strip() for s in args.strategies.split(",") if s.strip()], args.trials, args.seeds,
              args.evaluator, json.loads(args.evaluator_options), json.loads(args.strategy_options), args.progress)
    out["seconds"] = time.perf_counter() - t0
    print(f"space={out['space']} target={out['target']} evaluator={out['evaluator']} "
          f"{json.dumps(out['evaluator_options'])} trials={out['trials']} seeds={out['seeds']} "
          f"({out['distinct_archs_evaluated']} distinct archs evaluated, {out['seconds']:.0f} s)")
    print("objectives: max score, min latency_ms; hypervolume normalised to the observed range")
    print(f"{'strategy':<14} {'HV mean':>8} {'HV std':>7} {'vs random':>10} {'spread':>7}  per seed")
    for n, r in out["strategies"].items():
        print(f"{n:<14} {r['hv_mean']:>8.4f} {r['hv_std']:>7.4f} {r['ratio_vs_random_mean']:>9.3f}x "
              f"{r['ratio_vs_random_std']:>7.3f}  {' '.join(f'{x:.3f}' for x in r['ratio_per_seed'])}")
    if args.json:
        from nas.core.files import atomic_write_text
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
