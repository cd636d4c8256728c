"""How close each strategy gets to the exact optimum of a constrained search, at equal budget.

    python benchmarks/search_optimum.py [--seeds 20] [--trials 100,500] [--strategies evolution,random,nsga2]
                                        [--optuna-seeds 5] [--problems xeon-2.8ghz:8,xeon-2.8ghz:7,pixel1:80,pixel1:70]

Problem: the mbconv space, score = MACs (`--evaluator zero-cost --evaluator-option proxy=flops`),
latency predicted by a shipped LUT (`xeon-2.8ghz`, the cpu table the issue measured on; `pixel1`) and bounded. That problem is separable, so
`--strategy exact` (nas/strategies/exact.py) solves it exactly; each strategy's result is the best
feasible score among its first N trials as a percentage of that optimum (100 = found it), per
seed, reported as mean, standard deviation and worst seed. Every run uses the product path - the
same evaluator (latency + zero-cost flops), constraints and `run_search` loop that `nas search`
uses - with an in-memory store, so trials/s here is the strategy + evaluator cost alone.

Every checkpoint (`--trials 100,500`) is a run of its own with that budget, as `nas search --trials`
would be (evolution sizes its population and local phase by the budget). `--seed-offset` moves the
seeds: tune on 100.. and report on 0.., so the figures are not those the defaults were picked on.

The Optuna strategies (`tpe`, `optuna-nsga2`) and the peers are slower per trial, so they run
`--optuna-seeds` seeds. Peers (benchmarks/search_optimum_peers.py: NNI regularized evolution, pymoo
GA, Optuna TPE and NSGA-II driven directly) get the same evaluations and budget, and an infeasible
arch counts toward the budget but never as a result (NNI excepted: it gets its own constraint handling,
a latency filter before evaluation, so its infeasible proposals are neither evaluated nor counted); a
peer whose tool does not import is skipped with a note.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("search_optimum")
OPTUNA = ("tpe", "optuna-nsga2")


@dataclass(frozen=True)
class Problem:
    target: str
    bound_ms: float

    @property
    def label(self) -> str:
        return f"{self.target} <= {self.bound_ms:g} ms"


@dataclass
class Setup:
    """Everything a run of one problem shares: space, models, evaluator, feasibility and the optimum."""

    space: Any
    models: dict[str, Any]
    bounds: dict[str, float]
    evaluator: Any
    feasible: Any
    optimum: float
    optimum_arch: str


def setup(problem: Problem) -> Setup:
    from latency.targets import lut_model
    from nas.evaluators.base import Compose, LatencyEvaluator
    from nas.evaluators.catalog import make_evaluator
    from nas.strategies.problem import SearchProblem
    from nas.strategies.exact import ExactStrategy
    from search_spaces.catalog import get_space

    space = get_space("mbconv")
    models = {problem.target: lut_model(problem.target, space)}
    bounds = {problem.target: problem.bound_ms}
    options = {"proxy": "flops"}
    evaluator = Compose([LatencyEvaluator(models), make_evaluator("zero-cost", space, seed=0, **options)])

    def feasible(arch: Any) -> bool:
        return all(models[t].predict(arch) <= b for t, b in bounds.items())

    exact = ExactStrategy(space, seed=0, feasible=feasible,
                          problem=SearchProblem(space, models, bounds, "zero-cost", options))
    best = exact.solve()
    if best is None:
        raise SystemExit(f"{problem.label}: no arch meets the bound")
    return Setup(space, models, bounds, evaluator, feasible, float(evaluator(best)["score"]), space.format(best))


def run(name: str, s: Setup, seed: int, trials: int) -> tuple[np.ndarray, float]:
    """Best feasible score after each trial (as % of the optimum; 0 before the first feasible one)
    and the run's trials/s. Names in PEERS run that tool's optimiser on the same evaluations."""
    if name in PEERS:
        from search_optimum_peers import run_peer
        t0 = time.perf_counter()
        metrics = run_peer(name, s, seed, trials)
        rate = trials / (time.perf_counter() - t0)
    else:
        from nas.strategies.problem import problem_options
        from nas.pipeline.runner import run_search
        from nas.strategies.catalog import STRATEGIES
        cls = STRATEGIES.get(name)
        strategy = cls(s.space, seed=seed, feasible=s.feasible,
                       **problem_options(cls, s.space, s.models, s.bounds, "zero-cost", {"proxy": "flops"}))
        trials = strategy.trials(trials)   # the budget, as `nas search --trials` gives it
        t0 = time.perf_counter()
        metrics = [t.metrics if t.ok else None for t in run_search(strategy, s.evaluator, trials, progress=False)]
        rate = trials / (time.perf_counter() - t0)
    (target, bound), = s.bounds.items()
    scores = np.array([m["score"] if m is not None and m[f"latency_ms.{target}"] <= bound else 0.0 for m in metrics])
    return 100.0 * np.maximum.accumulate(scores) / s.optimum, rate


#: optimisers of other tools, driven through their own ask/tell on the same evaluations
#: (benchmarks/search_optimum_peers.py): name -> module that must import
PEERS = {"nni-evolution": "nni", "pymoo-ga": "pymoo", "optuna-tpe": "optuna", "optuna-nsga2-direct": "optuna"}


def peers_available(names: list[str]) -> tuple[list[str], list[str]]:
    """(the peers that can run here, a note for each one skipped and why)."""
    from search_optimum_peers import why_not
    keep, notes = [], []
    for name in names:
        why = why_not(name, PEERS[name]) if importlib.util.find_spec(PEERS[name]) else \
            f"'{PEERS[name]}' is not installed (pip install {PEERS[name]} to compare)"
        if why is None:
            keep.append(name)
        else:
            notes.append(f"skipped {name}: {why}")
    return keep, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="xeon-2.8ghz:8,xeon-2.8ghz:7,pixel1:80,pixel1:70", help="target:bound_ms, comma-separated")
    ap.add_argument("--strategies", default="evolution,random,nsga2,tpe,optuna-nsga2")
    ap.add_argument("--trials", default="100,500", help="checkpoints; the runs last as long as the largest")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="first seed (tune on e.g. 100 so that the reported seeds 0..N-1 stay unseen)")
    ap.add_argument("--peers", default=",".join(PEERS), help="peer optimisers to run where installed ('' for none)")
    ap.add_argument("--optuna-seeds", type=int, default=5, help="seeds of the slower Optuna strategies")
    ap.add_argument("--json", help="also write the per-seed figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    checkpoints = sorted(int(x) for x in args.trials.split(","))
    problems = [Problem(p.split(":")[0], float(p.split(":")[1])) for p in args.problems.split(",")]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [p for p in args.peers.split(",") if p.strip() and p.strip() not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; valid: {', '.join(PEERS)}")
    peers, notes = peers_available([p.strip() for p in args.peers.split(",") if p.strip()])
    strategies += peers
    rows: list[dict[str, Any]] = []
    for problem in problems:
        s = setup(problem)
        print(f"\n{problem.label}: exact optimum {s.optimum / 1e6:.2f} M MACs  ({s.optimum_arch})")
        print(f"  {'strategy':<13} {'seeds':>5} " + " ".join(f"{f'@{c}: mean  sd   worst':>24}" for c in checkpoints)
              + f" {'trials/s':>9}")
        for name in strategies:
            n = args.optuna_seeds if name in OPTUNA or name in PEERS else args.seeds
            at = {c: [] for c in checkpoints}
            rates = []
            for seed in range(args.seed_offset, args.seed_offset + n):
                # every checkpoint is a run with that budget (evolution plans for its --trials)
                for c in checkpoints:
                    curve, rate = run(name, s, seed, c)
                    at[c].append(curve[c - 1])
                    rates.append(rate)
            at = {c: np.array(v) for c, v in at.items()}
            print(f"  {name:<13} {n:>5} " + " ".join(
                f"{at[c].mean():>12.2f} {at[c].std():>5.2f} {at[c].min():>5.2f}" for c in checkpoints)
                  + f" {np.median(rates):>9.0f}")
            rows.append({"problem": problem.label, "optimum": s.optimum, "strategy": name, "seeds": n,
                         "trials_per_s": float(np.median(rates)),
                         **{f"pct_at_{c}": at[c].tolist() for c in checkpoints}})
    print()
    for note in notes:
        print(note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
