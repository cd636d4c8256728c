"""The one search loop: ask -> evaluate -> record -> tell.

A failed evaluation becomes a failed trial with its error kept, never a crashed search. Every
finished trial goes to the store before the strategy hears of it, so a search stopped at any point
resumes from the store with nothing lost (`resume=True` rebuilds the strategy from stored trials).
"""
from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nas.arch import Arch
from nas.evaluators import Evaluator
from nas.strategies.base import Strategy
from nas.trial import COMPLETE, FAILED, MemoryStore, Trial, TrialStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Constraint:
    """`metric <= bound` (or >= when `upper` is False), checked on predicted metrics before training."""

    metric: str
    bound: float
    upper: bool = True

    def ok(self, value: float) -> bool:
        return value <= self.bound if self.upper else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric} {'<=' if self.upper else '>='} {self.bound:g}"


def trial_seed(seed: int, number: int) -> int:
    """Per-trial seed derived from the search seed (stable across runners and resumes)."""
    return int(np.random.default_rng([seed, number]).integers(2**31 - 1))


def evaluate_trial(number: int, arch: Arch, evaluator: Evaluator, seed: int) -> Trial:
    t0 = time.perf_counter()
    try:
        metrics = evaluator(arch)
        bad = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)]
        if bad:
            raise ValueError(f"evaluator returned NaN for {', '.join(bad)}")
        return Trial(number, arch, metrics, COMPLETE, None, time.perf_counter() - t0, seed)
    except Exception as exc:  # a failed evaluation is data, not a crash
        log.warning("trial %d failed: %s", number, exc)
        err = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        return Trial(number, arch, {}, FAILED, err, time.perf_counter() - t0, seed)


def best_trial(trials: Sequence[Trial], metric: str = "score", maximize: bool = True,
               constraints: Sequence[Constraint] = ()) -> Trial | None:
    ok = [t for t in trials if t.ok and not math.isnan(t.value(metric))
          and all(c.ok(t.value(c.metric)) for c in constraints)]
    if not ok:
        return None
    return (max if maximize else min)(ok, key=lambda t: t.value(metric))


def run_search(strategy: Strategy, evaluator: Evaluator, trials: int, store: TrialStore | None = None,
               resume: bool = True, progress: bool = True,
               on_trial: Callable[[Trial], None] | None = None) -> list[Trial]:
    """Run until `trials` trials are finished in the store; return all of them."""
    from tqdm import tqdm

    store = store or MemoryStore()
    done = store.trials() if resume else []
    if done:
        log.info("resuming: %d trials already in the store", len(done))
        strategy.rebuild(done)
    bar = tqdm(total=trials, initial=min(len(done), trials), desc=f"{strategy.name} search", unit="trial",
               disable=not progress)
    best: float | None = None
    try:
        for number in range(len(done), trials):
            arch = strategy.ask()
            trial = evaluate_trial(number, arch, evaluator, trial_seed(strategy.seed, number))
            store.append(trial)
            strategy.tell(trial)
            done.append(trial)
            if on_trial:
                on_trial(trial)
            if trial.ok:
                f = strategy.fitness(trial)
                best = f if best is None else max(best, f)
                bar.set_postfix(best=f"{best if strategy.maximize else -best:.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return done
