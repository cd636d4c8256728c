"""Strategy interface (ask/tell) and the strategy registry.

A strategy proposes archs (`ask`) and learns from finished trials (`tell`). Its state must be a
function of the trials told so far, so `rebuild(trials)` restores it after a crash and the same
strategy can run serially or with parallel workers.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Sequence

import numpy as np

from nas.arch import Arch
from nas.errors import SearchError
from nas.registry import Registry
from nas.space import SearchSpace
from nas.trial import Trial

Feasible = Callable[[Arch], bool]


class Strategy(ABC):
    name: ClassVar[str]

    def __init__(self, space: SearchSpace, *, seed: int = 0, metric: str = "score", maximize: bool = True,
                 feasible: Feasible | None = None) -> None:
        self.space, self.seed, self.metric, self.maximize = space, seed, metric, maximize
        self.feasible: Feasible = feasible or (lambda arch: True)
        self.rng = np.random.default_rng(seed)
        self.history: list[Trial] = []
        self.seen: set[Arch] = set()

    @abstractmethod
    def ask(self) -> Arch:
        ...

    def tell(self, trial: Trial) -> None:
        self.history.append(trial)
        self.seen.add(trial.arch)

    def rebuild(self, trials: Sequence[Trial]) -> None:
        for t in sorted(trials, key=lambda t: t.number):
            self.tell(t)
        # advance the generator past the draws made so far, so a resumed run does not repeat them
        self.rng = np.random.default_rng([self.seed, len(self.history)])

    # ---- helpers for subclasses --------------------------------------------------------------
    def fitness(self, trial: Trial) -> float:
        """Higher is better; failed trials and NaNs rank last."""
        v = trial.value(self.metric) if trial.ok else math.nan
        if math.isnan(v):
            return -math.inf
        return v if self.maximize else -v

    def sample_feasible(self, tries: int = 10_000) -> Arch:
        """A random arch that meets the constraints, preferring ones not evaluated yet."""
        fallback = None
        for _ in range(tries):
            arch = self.space.sample(self.rng)
            if self.feasible(arch):
                if arch not in self.seen:
                    return arch
                fallback = arch
        if fallback is not None:
            return fallback
        raise SearchError(f"no {self.space.name} arch out of {tries} random samples meets the constraints; "
                          f"loosen the latency bound")


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
