"""TPE on a candidate list: how many of its proposals were projected onto the list, and how many archs
it shares with random search of the same seed.

    python benchmarks/tpe_candidates.py [--seed 0] [--trials 100] [--strategy tpe]

Problem: `nas bench strategies`' nb201 problem (NASLib's list of 724 archs with truth, `pixel3` <= 14 ms,
tabular CIFAR-10), one seed. Before projection (nas/strategies/optuna_sampler.py), TPE proposed over
all 15,625 archs and fell back to random feasible archs after 10 rejections.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's nas


def run(strategy: str, seed: int, trials: int) -> tuple[list[str], dict[str, int], float]:
    from nas.bench.strategies import SETUPS
    from nas.pipeline.config import SearchConfig
    from nas.pipeline.search import plan, run as run_search, train
    setup = SETUPS["nb201"]
    cfg = SearchConfig(space=setup.space, space_options=dict(setup.space_options), targets=(setup.target,),
                       latency_ms=(setup.latency_ms,), strategy=strategy, evaluator="tabular",
                       evaluator_options={"dataset": setup.truth}, trials=trials, seed=seed)
    p = plan(cfg, progress=False)
    trials_ = run_search(p, train(p, False), progress=False)
    ok = [t for t in trials_ if t.ok and t.metrics[f"latency_ms.{setup.target}"] <= setup.latency_ms]
    best = max(t.metrics["accuracy"] for t in ok)
    return [p.space.format(t.arch) for t in trials_], dict(p.strategy.stats), best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--strategy", action="append", default=None)
    args = ap.parse_args(argv)
    rand, _, rand_best = run("random", args.seed, args.trials)
    out = {}
    for name in args.strategy or ["tpe", "optuna-nsga2"]:
        archs, stats, best = run(name, args.seed, args.trials)
        out[name] = {**stats, "distinct": len(set(archs)), "shared_with_random": len(set(archs) & set(rand)),
                     "best_feasible_accuracy": best, "random_best_feasible_accuracy": rand_best}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
