"""The one search loop: ask -> evaluate -> record -> tell.

A failed evaluation becomes a failed trial with its error kept, never a crashed search. Every
finished trial goes to the store before the strategy hears of it, so a search stopped at any point
resumes from the store with nothing lost (`resume=True` rebuilds the strategy from stored trials).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from nas.core.arch import Arch
from nas.evaluators.base import Evaluator
from nas.pipeline.threads import search_blas_threads
from nas.strategies.base import Strategy
from nas.store.trial import COMPLETE, FAILED, MemoryStore, Trial, TrialStore

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


class Executor(Protocol):
    """Evaluates trials: `submit` up to `capacity` at once, `wait` returns the next finished one."""

    capacity: int

    def submit(self, number: int, arch: Arch, seed: int) -> None: ...

    def wait(self) -> Trial: ...


class LocalExecutor:
    """Evaluate in this process, one at a time (the default; imports nothing heavy)."""

    capacity = 1

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self._queue: deque[tuple[int, Arch, int]] = deque()

    def submit(self, number: int, arch: Arch, seed: int) -> None:
        self._queue.append((number, arch, seed))

    def wait(self) -> Trial:
        number, arch, seed = self._queue.popleft()
        return evaluate_trial(number, arch, self.evaluator, seed)


def run_search(strategy: Strategy, evaluator: Evaluator, trials: int, store: TrialStore | None = None,
               resume: bool = True, progress: bool = True,
               on_trial: Callable[[Trial], None] | None = None, executor: Executor | None = None,
               max_retries: int = 2) -> list[Trial]:
    """Run until `trials` trials are finished in the store; return all of them (in finishing order).

    With `resume`, trials already in the store are kept and told to the strategy (`rebuild`), and
    trials a stopped search left running (stores with `recover`) are evaluated again first, at
    most `max_retries` times each. Stores with `start` number the trials (Optuna's numbers);
    others get the next number after the highest stored one. `executor` runs evaluations (several
    at once for the Ray runner); by default they run here, one at a time."""
    from tqdm import tqdm

    store = MemoryStore() if store is None else store
    done = store.trials() if resume else []
    recover = getattr(store, "recover", None)
    retry: deque[tuple[Arch, int]] = deque(recover(max_retries) if resume and recover else ())
    if done:
        log.info("resuming: %d trials already in the store", len(done))
        strategy.rebuild(done)
    start = getattr(store, "start", None)
    next_number = max((t.number for t in done), default=-1) + 1
    executor = executor or LocalExecutor(evaluator)
    bar = tqdm(total=trials, initial=min(len(done), trials), desc=f"{strategy.name} search", unit="trial",
               disable=not progress)
    best = max((strategy.fitness(t) for t in done), default=None)
    in_flight: dict[int, Arch] = {}
    failed = sum(not t.ok for t in done)
    pinned = contextlib.ExitStack()   # the strategy's small solves: one BLAS thread, not one per core
    pinned.enter_context(search_blas_threads())
    try:
        while len(done) < trials:
            while len(in_flight) < max(1, executor.capacity) and len(done) + len(in_flight) < trials:
                arch, attempt = retry.popleft() if retry else (strategy.ask(), 0)
                strategy.mark_asked(arch)
                number = start(arch, attempt) if start else next_number
                next_number = max(next_number, number + 1)
                executor.submit(number, arch, trial_seed(strategy.seed, number))
                in_flight[number] = arch
            trial = executor.wait()
            in_flight.pop(trial.number, None)
            store.append(trial)
            strategy.tell(trial)
            done.append(trial)
            failed += not trial.ok
            if on_trial:
                on_trial(trial)
            if trial.ok:
                f = strategy.fitness(trial)
                best = f if best is None else max(best, f)
            if best is not None and math.isfinite(best):
                bar.set_postfix(best=f"{best if strategy.maximize else -best:.4g}", failed=failed, refresh=False)
            bar.update(1)
    finally:
        pinned.close()
        bar.close()
        flush = getattr(store, "flush", None)
        if flush:   # stores that batch their writes: everything finished is stored when this returns
            flush()
    return done
