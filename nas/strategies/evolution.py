"""Regularized (aging) evolution (Real et al. 2019) for latency-constrained search: the default.

The population is the `population` most recent finished trials, so the state is a pure function
of the history (resume, Ray). Until the population is full, archs are random feasible samples;
after that each child comes from tournament selection (the fittest of `sample_size` members):

- **crossover** (probability `crossover`): uniform crossover of two tournament winners - each
  gene from either parent - so good layers found in different archs can meet;
- **multi-gene mutation**: each gene changes with probability `mutation_rate` / genes (at least
  one changes), so one layer can be traded against another along the latency bound, which a
  one-gene mutation cannot do without leaving the feasible region;
- **latency-aware repair** (when the search gives the strategy its latency tables, i.e. separable
  spaces with LUT models): a child over a bound is walked back toward it, one random decision at
  a time stepping to its next cheaper choice, so it ends just under the bound instead of being
  thrown away; then, with probability `fill`, random decisions step to their next costlier choice
  while every bound still holds, so the child ends *on* the bound (under a latency bound the best
  archs sit there: any slack could have bought a larger layer). Random samples are repaired and
  filled the same way (feasible sampling without rejection). Without tables (non-separable spaces,
  `repair=false`), infeasible children are redrawn; `fill=0` keeps children where repair left them
  (for a score that does not grow with size).

Defaults (population 50, tournament half of it (25), crossover 0.9, 2 genes mutated per child,
fill 1) were chosen on benchmarks/search_optimum.py (mbconv, MACs, seeds 0-5, 500 trials): 99.3 /
99.1 / 99.6% of the exact optimum on cpu <= 8 ms / cpu <= 6.5 ms / pixel1 <= 80 ms, against 96.8% on
cpu <= 8 ms without fill, and 93.3% there for the one-gene-mutation evolution before it (issue 15).

Every child is feasible and new (neither evaluated nor in flight); a region that is fully explored
falls back to random feasible samples.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.problem import AdditiveTable, SearchProblem
from nas.strategies.base import Strategy
from nas.trial import Trial

_CHILD_TRIES = 200


class RegularizedEvolution(Strategy):
    name = "evolution"
    takes_problem: ClassVar[bool] = True

    def __init__(self, space: Any, *, population: int = 50, sample_size: int | None = None, crossover: float = 0.9,
                 mutation_rate: float = 2.0, repair: bool = True, fill: float = 1.0,
                 problem: SearchProblem | None = None,
                 **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        if sample_size is None:   # default tournament: half the population (25 of 50)
            sample_size = max(1, int(population) // 2)
        if population < 2 or not 1 <= sample_size <= population:
            raise UsageError(f"evolution needs population >= 2 and 1 <= sample_size <= population; "
                             f"got population={population}, sample_size={sample_size}")
        if not 0.0 <= float(crossover) <= 1.0:
            raise UsageError(f"evolution crossover must be a probability in [0, 1], got {crossover}")
        if not float(mutation_rate) > 0:
            raise UsageError(f"evolution mutation_rate (expected genes changed per child) must be > 0, "
                             f"got {mutation_rate}")
        self.population, self.sample_size = int(population), int(sample_size)
        if not isinstance(repair, bool):
            raise UsageError(f"evolution repair must be true or false, got {repair!r}")
        if not 0.0 <= float(fill) <= 1.0:
            raise UsageError(f"evolution fill must be a probability in [0, 1], got {fill}")
        self.crossover, self.mutation_rate, self.fill = float(crossover), float(mutation_rate), float(fill)
        self.latency: dict[str, AdditiveTable] | None = None
        self.bounds: dict[str, float] = {}
        self._step_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._const: dict[str, float] = {}
        if problem is not None and repair and problem.bounds:
            self.latency = problem.latency_tables()
            self.bounds = dict(problem.bounds)

    # ---- ask ----------------------------------------------------------------------------------
    def ask(self) -> Arch:
        if len(self.history) < self.population:
            return self.sample()
        pop = self.history[-self.population:]
        for _ in range(_CHILD_TRIES):
            genes = self._tournament(pop).arch.genes
            if self.rng.random() < self.crossover:
                genes = self._uniform_crossover(genes, self._tournament(pop).arch.genes)
            child = self._finish(self._mutate(genes))
            if child is not None and self.is_new(child) and self.feasible(child):
                return child
        return self.sample()

    def sample(self) -> Arch:
        """A random feasible arch not evaluated yet (repaired toward the bound when tables are known)."""
        if self.latency is not None:
            for _ in range(_CHILD_TRIES):
                arch = self._finish(self.space.sample(self.rng).genes)
                if arch is not None and self.is_new(arch) and self.feasible(arch):
                    return arch
        return self.sample_feasible()

    # ---- operators ----------------------------------------------------------------------------
    def _tournament(self, pop: Sequence[Trial]) -> Trial:
        idx = self.rng.choice(len(pop), size=min(self.sample_size, len(pop)), replace=False)
        return max((pop[i] for i in idx), key=self.fitness)

    def _uniform_crossover(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        take_b = self.rng.random(len(a)) < 0.5
        return tuple(gb if t else ga for ga, gb, t in zip(a, b, take_b))

    def _mutate(self, genes: tuple[Any, ...]) -> tuple[Any, ...]:
        decisions = self.space.decisions
        n = len(decisions)
        hit = self.rng.random(n) < min(1.0, self.mutation_rate / n)
        if not hit.any():
            hit[self.rng.integers(n)] = True
        out = list(genes)
        for i in np.flatnonzero(hit):
            options = [c for c in decisions[i].choices if c != genes[i]]
            if options:
                out[i] = options[self.rng.integers(len(options))]
        return tuple(out)

    def _finish(self, genes: tuple[Any, ...]) -> Arch | None:
        """A valid arch from `genes`, repaired under the bounds when tables are known; None if invalid."""
        try:
            arch = self.space.make(genes)
        except ArchError:
            return None
        if self.latency is None:
            return arch
        codes = self._repair(self.space.encode(arch))
        if self.fill and self.rng.random() < self.fill:
            codes = self._grow(codes)
        try:
            return self.space.decode(codes)
        except ArchError:
            return None

    def _repair(self, codes: np.ndarray) -> np.ndarray:
        """Step random decisions to their next cheaper choice until every bound holds."""
        steps = self._steps()
        codes = codes.copy()
        rows = np.arange(len(codes))
        for target, (value, down, _) in steps.items():
            excess = float(value[rows, codes].sum()) + self._const[target] - self.bounds[target]
            while excess > 0:
                nxt = down[rows, codes]
                movable = np.flatnonzero(nxt >= 0)
                if not movable.size:
                    break
                i = int(movable[self.rng.integers(movable.size)])
                excess += float(value[i, nxt[i]] - value[i, codes[i]])
                codes[i] = nxt[i]
        return codes

    def _grow(self, codes: np.ndarray) -> np.ndarray:
        """Step random decisions to their next costlier choice while every bound still holds."""
        steps = self._steps()
        codes = codes.copy()
        rows = np.arange(len(codes))
        up = next(iter(steps.values()))[2]   # "costlier" as the first target orders the choices
        slack = {t: self.bounds[t] - self._const[t] - float(v[rows, codes].sum()) for t, (v, _, _) in steps.items()}
        while True:
            nxt = up[rows, codes]
            ok = nxt >= 0
            safe = np.where(ok, nxt, 0)
            deltas = {t: v[rows, safe] - v[rows, codes] for t, (v, _, _) in steps.items()}
            for t, d in deltas.items():
                ok &= d <= slack[t]
            fits = np.flatnonzero(ok)
            if not fits.size:
                return codes
            i = int(fits[self.rng.integers(fits.size)])
            for t, d in deltas.items():
                slack[t] -= float(d[i])
            codes[i] = nxt[i]

    def _steps(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per bounded target: (decisions x choices latency matrix, next cheaper choice, next costlier
        choice), -1 where there is none; built once from the tables."""
        if self._step_cache is None:
            if self.latency is None:
                raise RuntimeError("repair needs latency tables")
            self._step_cache, self._const = {}, {}
            for t, table in self.latency.items():
                width = max(len(v) for v in table.values)
                value = np.full((len(table.values), width), np.inf)
                down = np.full(value.shape, -1, dtype=np.int64)
                up = np.full(value.shape, -1, dtype=np.int64)
                for i, v in enumerate(table.values):
                    value[i, :len(v)] = v
                    for c in range(len(v)):
                        below, above = np.flatnonzero(v < v[c]), np.flatnonzero(v > v[c])
                        if below.size:
                            down[i, c] = below[np.argmax(v[below])]
                        if above.size:
                            up[i, c] = above[np.argmin(v[above])]
                self._step_cache[t] = (value, down, up)
                self._const[t] = table.const
        return self._step_cache
