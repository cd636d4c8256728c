"""Regularized (aging) evolution, Real et al. 2019, with constraints.

The population is the `population` most recent finished trials, so the state is a pure function of
the history (resumable). Until the population is full, archs are random feasible samples; after
that a tournament of `sample_size` picks the fittest parent, which is mutated until the child is
feasible and new.
"""
from __future__ import annotations

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.strategies.base import Strategy


class RegularizedEvolution(Strategy):
    name = "evolution"

    def __init__(self, space, *, population: int = 20, sample_size: int = 5, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(space, **kwargs)
        if population < 2 or not 1 <= sample_size <= population:
            raise UsageError(f"evolution needs population >= 2 and 1 <= sample_size <= population; "
                             f"got population={population}, sample_size={sample_size}")
        self.population, self.sample_size = population, sample_size

    def ask(self) -> Arch:
        if len(self.history) < self.population:
            return self.sample_feasible()
        pop = self.history[-self.population:]
        idx = self.rng.choice(len(pop), size=self.sample_size, replace=False)
        parent = max((pop[i] for i in idx), key=self.fitness).arch
        for _ in range(200):
            child = self.space.mutate(parent, self.rng)
            if self.is_new(child) and self.feasible(child):
                return child
            if self.feasible(child) and self.rng.random() < 0.05:
                parent = child  # wander through evaluated neighbours to escape a fully explored region
        return self.sample_feasible()
