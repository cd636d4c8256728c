"""`exact`: the optimum of a latency-constrained search, solved instead of searched.

    nas search --space mbconv --target cpu --latency-ms 8 --strategy exact --evaluator-option proxy=flops

When the space is separable, every latency model is a per-layer LUT and the score is a sum over
layers (MACs or parameters), the problem is a multiple-choice knapsack: pick one choice per
decision, maximise sum(score) subject to sum(latency_t) <= bound_t for each bounded target.
We solve it as a 0/1 integer program (one binary per decision and choice; scipy.optimize.milp,
i.e. HiGHS branch-and-cut, with a zero optimality gap) and re-check the answer on the latency
models themselves, tightening a bound by the excess if rounding let a solution through.

With one bounded target, trial n is the n-th arch of one ranked list of the k best feasible archs
(`nas.strategies.kbest`, a dynamic program; k = twice the budget, at least 100, grown when used up).
With several, trial n is the n-th best feasible arch from the integer program: each ask excludes the archs already evaluated or in
flight with one "no-good" cut each (the chosen choices may not all be picked again), so the state
is a function of the trial history (resume, Ray) and the first trial is the optimum. Any other
problem is a usage error naming why, pointing to `--strategy evolution`.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Iterable, Mapping

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.space import SearchSpace
from nas.core.errors import SearchError, UsageError
from nas.strategies.problem import AdditiveTable, SearchProblem
from nas.strategies.base import Strategy

log = logging.getLogger(__name__)
_REPAIRS = 5   # re-solves with a tightened bound when the solver's tolerance admitted a violation


def solve_choice_knapsack(score: AdditiveTable, latency: Mapping[str, AdditiveTable], bounds: Mapping[str, float],
                          maximize: bool = True, exclude: Iterable[np.ndarray] = ()) -> np.ndarray | None:
    """Choice index per decision maximising (or minimising) `score` with `latency[t] <= bounds[t]` for
    every t, among codes not in `exclude`; None when no such code exists. Exact up to the solver's
    feasibility tolerance (1e-9 ms after `_REPAIRS`), which callers re-check on their models."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    sizes = [len(v) for v in score.values]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n, d = int(offsets[-1]), len(sizes)
    c = np.concatenate(score.values) * (-1.0 if maximize else 1.0)
    one_each = np.zeros((d, n))
    for i in range(d):
        one_each[i, offsets[i]:offsets[i + 1]] = 1.0
    rows, lo, hi = [one_each], [np.ones(d)], [np.ones(d)]
    targets = sorted(bounds)
    for t in targets:
        rows.append(np.concatenate(latency[t].values)[None, :])
        lo.append(np.array([-np.inf]))
        hi.append(np.array([bounds[t] - latency[t].const]))
    cuts = [offsets[:-1] + np.asarray(codes, dtype=np.int64) for codes in exclude]
    if cuts:
        cut = np.zeros((len(cuts), n))
        for k, idx in enumerate(cuts):
            cut[k, idx] = 1.0
        rows.append(cut)
        lo.append(np.full(len(cuts), -np.inf))
        hi.append(np.full(len(cuts), d - 1.0))
    slack = {t: 0.0 for t in targets}
    for _ in range(_REPAIRS + 1):
        ub = np.concatenate(hi)
        for k, t in enumerate(targets):
            ub[d + k] -= slack[t]
        res = milp(c, integrality=np.ones(n), bounds=Bounds(0, 1),
                   constraints=LinearConstraint(np.vstack(rows), np.concatenate(lo), ub),
                   options={"mip_rel_gap": 0.0, "presolve": True})
        if res.x is None:
            return None
        x = np.round(res.x).astype(np.int64)
        codes = np.array([int(np.argmax(x[offsets[i]:offsets[i + 1]])) for i in range(d)], dtype=np.int64)
        excess = {t: float(latency[t](codes)[0]) - bounds[t] for t in targets}
        if all(e <= 0 for e in excess.values()):
            return codes
        for t, e in excess.items():
            if e > 0:
                slack[t] += e + 1e-9
    raise SearchError("the exact solver kept returning archs over the latency bound; use --strategy evolution")


class ExactStrategy(Strategy):
    """Solve the constrained problem exactly; trial n is the n-th best feasible arch."""

    name = "exact"
    follows_candidates: ClassVar[bool] = False   # the MILP ranges over the whole space
    takes_problem: ClassVar[bool] = True
    requires_problem: ClassVar[bool] = True   # cannot run on a bare `feasible` test (registry contract tests skip it)

    @classmethod
    def supported_spaces(cls) -> tuple[str, ...]:
        """The separable spaces: those whose layers per decision depend on that decision alone."""
        from search_spaces.catalog import SPACES
        return tuple(n for n in SPACES.names()
                     if SPACES.get(n).separable_layers is not SearchSpace.separable_layers)

    @classmethod
    def require(cls, space: SearchSpace) -> None:
        if not cls.supports(space):
            raise UsageError(f"strategy 'exact' cannot search space {space.name!r}: it is not separable (a "
                             f"decision's layers depend on other decisions); separable spaces: "
                             f"{cls.supported_text()}; use --strategy evolution")

    def __init__(self, space: Any, *, problem: SearchProblem | None = None, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        if problem is None:
            raise UsageError("strategy 'exact' solves a search from its latency tables and score, so it runs "
                             "through 'nas search' / nas.search.search(); use --strategy evolution elsewhere")
        if len(self.objectives) > 1:
            raise UsageError("strategy 'exact' optimises one objective; use --strategy nsga2 for several")
        if self.metric != "score":
            raise UsageError(f"strategy 'exact' optimises the evaluator's 'score', not {self.metric!r}; "
                             f"use --strategy evolution")
        why = problem.why_score_not_additive()
        if why is not None:
            raise UsageError(f"strategy 'exact' cannot solve this search: {why}; use --strategy evolution")
        self.latency = problem.latency_tables()
        if self.latency is None:
            raise UsageError("strategy 'exact' cannot solve this search: a latency model is not a per-layer "
                             "table of a separable space; use --strategy evolution")
        self.problem, self.score = problem, problem.score_table()
        self.bounds = dict(problem.bounds)
        self.budget: int | None = None
        self._ranked: list[Arch] | None = None
        self._complete = False

    def solve(self, exclude: Iterable[Arch] = ()) -> Arch | None:
        """The best feasible arch not in `exclude` (None when there is none)."""
        codes = solve_choice_knapsack(self.score, self.latency or {}, self.bounds, self.maximize,
                                      [self.space.encode(a) for a in exclude])
        return None if codes is None else self.space.decode(codes)

    def ranked(self) -> list[Arch] | None:
        """With one bounded target: the best `2 x budget` (at least 100) feasible archs, best first, from
        one dynamic program (`nas.strategies.kbest`), grown when the search has used them up; None with
        several bounds (each ask then solves the integer program with the evaluated archs cut off)."""
        if len(self.bounds) != 1 or self.latency is None:
            return None
        used = len(self.seen) + len(self.pending) + 1
        if self._ranked is None or (len(self._ranked) < used and not self._complete):
            from nas.strategies.kbest import k_best
            k = max(100, 2 * (self.budget or 0), 2 * len(self._ranked or []), used)
            (target, bound), = self.bounds.items()
            codes = k_best(self.score, self.latency[target], bound, k, self.maximize)
            self._ranked = [self.space.decode(c) for c in codes]
            self._complete = len(codes) < k   # every feasible arch is listed
        return self._ranked

    def trials(self, requested: int) -> int:
        self.budget = int(requested)
        return requested

    def ask(self) -> Arch:
        ranked = self.ranked()
        if ranked is not None:
            for arch in ranked:   # an arch on the bound by the table but over it by the model's rounding: next
                if self.is_new(arch) and self.feasible(arch):
                    return arch
        arch = self.solve(self.seen | self.pending)
        if arch is None:   # every feasible arch has been evaluated
            return self.sample_feasible()
        if not self.feasible(arch):
            raise SearchError(f"exact solution {self.space.format(arch)!r} fails the search's constraints; "
                              f"use --strategy evolution")
        return arch
