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
  (for a score that does not grow with size);
- **surrogate guidance** (`guide`, half the children by default): a ridge regression of the
  history's fitness on one-hot codes (one weight per decision and choice, refit every 10 trials)
  steers repair and fill: repair takes the change that loses the least predicted fitness per ms
  saved, fill the one that gains the most per ms spent (a greedy knapsack step along the bound),
  then any slack left is filled at random. Exact in the limit for a score that is a sum over
  layers (MACs, params), a first-order model otherwise;
- **budget**: given the budget (`trials(n)`, which the pipeline calls with --trials), the
  population is n/5 clipped to 10-50 (at 100 trials, 50 random samples would be half the
  budget), and the last `local` share (0.2) of the trials are one-gene steps around the best arch
  (then repaired and filled; after 20 old or infeasible children in a row, around the next best).
  Without a budget (run_search called directly): population 50, no local phase;
- **screening** (`screen`, 100 by default; 1 turns it off), when there are no latency tables (a
  non-separable space or model, e.g. the ground-truth benchmarks): each ask ranks a pool of `screen`
  new archs - a share `explore` (0.8) random feasible archs of the whole space, the rest children as
  above - by expected improvement under a GP on the arch encodings fitted to the history, and returns
  the best feasible one (`nas.strategies.screening`, which gives the tuning: seeds 100-119 only);
- **candidate lists** (nb201 `-o candidates=...`): a child outside the list becomes the nearest candidate.

Defaults (crossover 0.9, 2 genes mutated per child, fill 1, guide 0.5, local 0.2) were chosen with
benchmarks/search_optimum.py's problems (mbconv, MACs, cpu <= 8 / 7 ms, pixel1 <= 80 / 70 ms) on
seeds 100-119 only, so the reported seeds 0-19 are unseen: mean % of the exact optimum at 500
trials went 99.15 / 98.84 / 99.63 / 99.23 (before, same seeds) -> 100.00 / 99.94 / 99.99 / 99.92.

Every child is feasible and new (neither evaluated nor in flight); a region that is fully explored
falls back to random feasible samples.
"""
from __future__ import annotations

import heapq
from typing import Any, ClassVar, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.strategies.problem import AdditiveTable, SearchProblem
from nas.strategies.base import Strategy
from nas.store.trial import Trial

_CHILD_TRIES = 200
LOCAL_MISSES = 20
LOCAL = 0.2
GUIDE = 0.5
SCREEN = 100
EXPLORE = 0.8


def auto_population(budget: int | None) -> int:
    """Population for a budget of trials: a fifth of it, 10 to 50 (50 when the budget is unknown).
    At 100 trials a population of 50 would spend half the budget on random samples."""
    return 50 if budget is None else int(np.clip(budget // 5, 10, 50))


class RegularizedEvolution(Strategy):
    name = "evolution"
    takes_problem: ClassVar[bool] = True

    def __init__(self, space: Any, *, population: int | str | None = "auto", sample_size: int | str | None = "auto",
                 crossover: float = 0.9, mutation_rate: float = 2.0, repair: bool = True, fill: float = 1.0,
                 local: float = LOCAL, guide: float = GUIDE, screen: int = SCREEN, explore: float = EXPLORE,
                 problem: SearchProblem | None = None, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        population = None if population == "auto" else population
        sample_size = None if sample_size == "auto" else sample_size
        for key, value, default in (("population", population, "auto: trials/5, 10 to 50"),
                                    ("sample_size", sample_size, "auto: half the population")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{key} must be a number (default {default}), got {value!r}")   # the pipeline
                # names the strategy and options given
        self._given = (population, sample_size)
        if population is None:   # until the budget is known (`trials`): the size for 500 trials
            population = auto_population(None)
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
        if not 0.0 <= float(local) < 1.0:
            raise UsageError(f"evolution local (share of the budget spent improving the best arch) must be in "
                             f"[0, 1), got {local}")
        self.local = float(local)
        if not 0.0 <= float(guide) <= 1.0:
            raise UsageError(f"evolution guide must be a probability in [0, 1], got {guide}")
        self.guide = float(guide)
        if isinstance(screen, bool) or not isinstance(screen, int) or screen < 1:
            raise UsageError(f"evolution screen (children ranked by the GP per ask; 1: off) must be an integer "
                             f">= 1, got {screen!r}")
        self.screen = int(screen)
        if not 0.0 <= float(explore) <= 1.0:
            raise UsageError(f"evolution explore (share of the screened pool that is random archs) must be in "
                             f"[0, 1], got {explore}")
        self.explore = float(explore)
        self._screen: Any = None   # nas.strategies.screening.Screen, made on first use
        self._problem = problem
        self._codes: dict[Arch, np.ndarray] = {}
        self._fit: tuple[int, np.ndarray | None] = (-1, None)
        self._pop_fits: tuple[tuple[int, int], np.ndarray] = ((-1, -1), np.zeros(0))
        self._best: Trial | None = None   # fittest trial told so far
        #: local phase centres: (-fitness, order, trial) of every finite trial; a centre whose neighbourhood
        #: gave LOCAL_MISSES old or infeasible children in a row is popped for the next fittest
        self._centres: list[tuple[float, int, Trial]] = []
        self._normal: list[Any] | None = None   # [trials read, X'X, X'y, count, sum y, sum y^2]
        self.budget: int | None = None
        self.latency: dict[str, AdditiveTable] | None = None
        self.bounds: dict[str, float] = {}
        self._step_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._const: dict[str, float] = {}
        if problem is not None and repair and problem.bounds:
            self.latency = problem.latency_tables()
            self.bounds = dict(problem.bounds)

    def trials(self, requested: int) -> int:
        """The budget: sizes the population when none was given (`auto_population`) and starts the
        local phase (the last `local` share of the trials) on time."""
        self.budget = int(requested)
        population, sample_size = self._given
        if population is None:
            self.population = auto_population(self.budget)
            if sample_size is None:
                self.sample_size = max(1, self.population // 2)
        return requested

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        f = self.fitness(trial)
        if self._best is None or f > self.fitness(self._best):
            self._best = trial   # the first of the fittest, as max() over the history would pick
        if np.isfinite(f):
            heapq.heappush(self._centres, (-f, len(self.history), trial))   # ties: the first told on top

    # ---- ask ----------------------------------------------------------------------------------
    def ask(self) -> Arch:
        if len(self.history) < self.population:
            return self.sample()
        pop = self.history[-self.population:]
        local = self.budget is not None and len(self.history) >= (1.0 - self.local) * self.budget
        best = (self._centres[0][2] if self._centres else self._best) if local else None
        if self.latency is None and self.guide > 0 and self.screen > 1:
            child = self._screened(pop, best)
            if child is not None:
                return child
        misses = 0
        for _ in range(_CHILD_TRIES):
            child = self._child(pop, best)
            if child is not None and self.is_new(child) and self.feasible(child):
                return child
            misses += 1
            if best is not None and misses >= LOCAL_MISSES and len(self._centres) > 1:
                # the centre's neighbourhood is (nearly) all evaluated: step from the next fittest arch, so
                # the tries per trial stay bounded as the local phase goes on (cost linear in trials)
                heapq.heappop(self._centres)
                best, misses = self._centres[0][2], 0
        return self.sample()

    def _child(self, pop: Sequence[Trial], best: Trial | None) -> Arch | None:
        """One child of the population (or, in the local phase, a step from the best arch); None if invalid."""
        if best is not None:
            child = self._finish(self._mutate(best.arch.genes, rate=1.0))
            return child if child is not None else self._finish(self.space.mutate(best.arch, self.rng).genes)
        parent = self._tournament(pop).arch
        genes = parent.genes
        if self.rng.random() < self.crossover:
            genes = self._uniform_crossover(genes, self._tournament(pop).arch.genes)
        child = self._finish(self._mutate(genes))
        return child if child is not None else self._finish(self.space.mutate(parent, self.rng).genes)

    def _screened(self, pop: Sequence[Trial], best: Trial | None) -> Arch | None:
        """The child of highest expected improvement under a GP (`nas.strategies.screening`); None if none."""
        if self._screen is None:
            from nas.strategies.screening import Screen
            self._screen = Screen(self.space, self.fitness, self._problem)
        best_y = self.fitness(self._best) if self._best is not None else -np.inf
        return self._screen.pick(self.history, lambda: self._child(pop, best), self.is_new, self.feasible,
                                 self.screen, best_y, self.rng, self.explore)

    def _code(self, arch: Arch) -> np.ndarray:
        codes = self._codes.get(arch)
        if codes is None:
            codes = self._codes[arch] = self.space.encode(arch)
        return codes

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
        fits = self._pop_fitness(pop)
        return pop[int(idx[int(np.argmax(fits[idx]))])]   # the first of the fittest drawn, as max() picks

    def _pop_fitness(self, pop: Sequence[Trial]) -> np.ndarray:
        """Fitness of the population (computed once per population, not once per tournament entrant)."""
        key = (len(self.history), len(pop))
        if self._pop_fits[0] != key:
            self._pop_fits = (key, np.array([self.fitness(t) for t in pop]))
        return self._pop_fits[1]

    def _uniform_crossover(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        take_b = self.rng.random(len(a)) < 0.5
        return tuple(gb if t else ga for ga, gb, t in zip(a, b, take_b))

    def _mutate(self, genes: tuple[Any, ...], rate: float | None = None) -> tuple[Any, ...]:
        decisions = self.space.decisions
        n = len(decisions)
        hit = self.rng.random(n) < min(1.0, (self.mutation_rate if rate is None else rate) / n)
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
        weights = self._surrogate() if self.guide and self.rng.random() < self.guide else None
        codes = self._repair(self.space.encode(arch), weights)
        if self.fill and self.rng.random() < self.fill:
            codes = self._grow(codes, weights)
        try:
            return self.space.decode(codes)
        except ArchError:
            return None

    def _repair(self, codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Step random decisions to their next cheaper choice until every bound holds; with surrogate
        `weights`, take the change that loses the least predicted fitness per ms saved instead."""
        steps = self._steps()
        codes = codes.copy()
        rows = np.arange(len(codes))
        for target, (value, down, _) in steps.items():
            excess = float(value[rows, codes].sum()) + self._const[target] - self.bounds[target]
            while excess > 0:
                if weights is not None:
                    saved = value[rows, codes][:, None] - value
                    movable = np.isfinite(saved) & (saved > 0) & np.isfinite(weights)
                    loss = np.where(movable, weights[rows, codes][:, None] - weights, 0.0)
                    ratio = np.where(movable, loss / np.where(movable, saved, 1.0), np.inf)
                    i, c = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
                    if not np.isfinite(ratio[i, c]):
                        break
                else:
                    nxt = down[rows, codes]
                    movable = np.flatnonzero(nxt >= 0)
                    if not movable.size:
                        break
                    i = int(movable[self.rng.integers(movable.size)])
                    c = nxt[i]
                excess += float(value[i, c] - value[i, codes[i]])
                codes[i] = c
        return codes

    def _grow(self, codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Step random decisions to their next costlier choice while every bound still holds; with
        surrogate `weights`, take the fitting change with the most predicted gain per ms instead."""
        steps = self._steps()
        codes = codes.copy()
        rows = np.arange(len(codes))
        if weights is not None:   # best trades first, then any slack left is filled as below
            codes = self._grow_guided(codes, weights, steps)
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

    def _grow_guided(self, codes: np.ndarray, weights: np.ndarray,
                     steps: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        rows = np.arange(len(codes))
        first = next(iter(steps))
        while True:
            ok = np.isfinite(weights) & (weights > weights[rows, codes][:, None])
            for t, (value, _, _) in steps.items():
                slack = self.bounds[t] - self._const[t] - float(value[rows, codes].sum())
                ok &= np.isfinite(value) & (value - value[rows, codes][:, None] <= slack)
            if not ok.any():
                return codes
            cost = np.where(ok, steps[first][0] - steps[first][0][rows, codes][:, None], 1.0)
            gain = np.where(ok, weights - weights[rows, codes][:, None], 0.0)
            ratio = np.where(ok, gain / np.maximum(cost, 1e-9), -np.inf)
            i, c = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            codes[i] = c

    def _surrogate(self) -> np.ndarray | None:
        """Predicted fitness per decision x choice (-inf where a decision has no such choice): ridge
        regression of the history's fitness on one-hot codes, refit every 10 trials. The normal equations
        (X'X, X'y, sums of y and y^2) are accumulated as trials arrive, so a refit costs one solve of
        decisions x choices unknowns whatever the history's length (linear total cost), and gives the same
        weights as a fit on the whole history. A function of the history, like the rest of the state;
        exact in the limit for a score that is a sum over layers."""
        n = len(self.history)
        if self.latency is None or n < self.population:
            return None
        if self._fit[0] == n // 10:
            return self._fit[1]
        value = next(iter(self._steps().values()))[0]
        width = value.shape[1]
        if self._normal is None:
            self._normal = [0, np.zeros((value.size, value.size)), np.zeros(value.size), 0, 0.0, 0.0]
        acc = self._normal
        for t in self.history[acc[0]:]:
            f = self.fitness(t)
            if np.isfinite(f):
                idx = np.arange(len(value)) * width + self._code(t.arch)
                acc[1][np.ix_(idx, idx)] += 1.0
                acc[2][idx] += f
                acc[3] += 1
                acc[4] += f
                acc[5] += f * f
        acc[0] = n
        weights = None
        count = int(acc[3])
        if count >= 10:
            mean = acc[4] / count
            std = float(np.sqrt(max(acc[5] / count - mean * mean, 0.0))) or 1.0
            xty = (acc[2] - mean * np.diag(acc[1])) / std   # X' (y - mean) / std, one-hot columns
            w = np.linalg.solve(acc[1] + np.eye(value.size), xty)
            weights = np.where(np.isfinite(value), w.reshape(value.shape), -np.inf)
        self._fit = (n // 10, weights)
        return weights

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
