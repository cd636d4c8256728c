"""Hard budgets: `--constraint METRIC<=VALUE` for every strategy.

    METRIC: params_m | macs_m | peak_memory_mb | latency_ms[TARGET]

All bounds must hold (AND). Each metric is predicted from the arch's layer specs (params and MACs
by formula, peak activation memory at batch 1 by `search_spaces.memory`, latency by the target's
latency model), so feasibility is known before an arch is trained or scored.

A `Budget` holds the bounds of a search: its `feasible` test is what ask/tell strategies sample
under; `metrics` are added to every trial (so `best_trial`, the Optuna store's constraints and
best.json see the same numbers); `minimum` is the least value any arch of a separable space can
have (a bound below it fails before the search); `tables` give additive tables of the separable
metrics to the strategies that solve or repair with them (exact, evolution's repair); `project`
moves an arch onto the feasible set (weight-sharing and differentiable strategies end with it).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import ArchError, SearchError, UsageError
from nas.core.space import SearchSpace
from nas.strategies.problem import AdditiveTable, SearchProblem

#: metrics a --constraint may bound (latency_ms takes the target in brackets)
PLAIN = ("params_m", "macs_m", "peak_memory_mb")
METRICS = (*PLAIN, "latency_ms[TARGET]")
_FORM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:\[\s*([^\]]*?)\s*\])?\s*(<=|>=|<|>|=)\s*(.*?)\s*$")
_UNITS = {"params_m": "M params", "macs_m": "M MACs", "peak_memory_mb": "MB", "latency_ms": "ms"}


@dataclass(frozen=True)
class Bound:
    """`metric <= value` (metric one of PLAIN, or latency_ms with its target)."""

    metric: str
    value: float
    target: str | None = None

    @property
    def key(self) -> str:
        """The trial metric it bounds (`latency_ms.<target>` for latency)."""
        return f"latency_ms.{self.target}" if self.metric == "latency_ms" else self.metric

    @property
    def label(self) -> str:
        return f"latency_ms[{self.target}]" if self.metric == "latency_ms" else self.metric

    def __str__(self) -> str:
        return f"{self.label}<={self.value:g}"


def parse_constraint(text: str) -> Bound:
    """`"params_m<=3.5"` / `"latency_ms[pixel1]<=80"` -> Bound; UsageError naming the problem."""
    forms = "METRIC<=VALUE, METRIC one of " + ", ".join(METRICS)
    m = _FORM.match(str(text))
    if m is None:
        raise UsageError(f"--constraint {str(text)[:60]!r} is malformed; write {forms}")
    name, target, op, raw = m.groups()
    if name not in (*PLAIN, "latency_ms"):
        raise UsageError(f"--constraint {str(text)[:60]!r}: unknown metric {name!r}; valid metrics: "
                         f"{', '.join(METRICS)}")
    if op != "<=":
        raise UsageError(f"--constraint {str(text)[:60]!r}: only upper bounds (<=) are supported; write {forms}")
    if name == "latency_ms" and not target:
        raise UsageError(f"--constraint {str(text)[:60]!r}: latency_ms needs its target, e.g. latency_ms[pixel1]<=80")
    if name != "latency_ms" and target is not None:
        raise UsageError(f"--constraint {str(text)[:60]!r}: {name} takes no [target]")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--constraint {str(text)[:60]!r}: bound {raw[:30]!r} is not a number; write {forms}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--constraint {str(text)[:60]!r}: the bound must be a positive number, got {raw[:30]}")
    return Bound(name, value, target or None)


def arch_metrics(space: SearchSpace, arch: Arch) -> dict[str, float]:
    """params_m, macs_m and peak_memory_mb of `arch`, from its layer specs."""
    from search_spaces.memory import peak_memory_mb
    from search_spaces.op_params import layer_params
    from search_spaces.ops import layer_macs
    specs = space.layers(arch)
    return {"params_m": sum(layer_params(s) for s in specs) / 1e6,
            "macs_m": sum(layer_macs(s) for s in specs) / 1e6,
            "peak_memory_mb": peak_memory_mb(specs)}


class Budget:
    """The bounds of one search on one space, with the latency models of the bounded targets."""

    def __init__(self, space: SearchSpace, bounds: Sequence[Bound], models: Mapping[str, Any]) -> None:
        self.space, self.bounds, self.models = space, list(bounds), dict(models)
        keys = [b.key for b in self.bounds]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise UsageError(f"{dup[0]} is bounded twice; give each metric one bound")
        missing = [b.target for b in self.bounds if b.metric == "latency_ms" and b.target not in self.models]
        if missing:
            raise UsageError(f"no latency model for target {missing[0]!r}")
        self._cache: dict[Arch, dict[str, float]] = {}

    def __bool__(self) -> bool:
        return bool(self.bounds)

    # ---- values --------------------------------------------------------------------------------
    def metrics(self, arch: Arch) -> dict[str, float]:
        """The bounded metrics of `arch` (and params_m / macs_m / peak_memory_mb always)."""
        got = self._cache.get(arch)
        if got is None:
            got = arch_metrics(self.space, arch)
            for b in self.bounds:
                if b.metric == "latency_ms":
                    got[b.key] = float(self.models[b.target].predict(arch))
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[arch] = got
        return dict(got)

    def feasible(self, arch: Arch) -> bool:
        values = self.metrics(arch)
        return all(values[b.key] <= b.value for b in self.bounds)

    def violation(self, arch: Arch) -> float:
        """Sum of the relative excesses over the bounds (0: feasible)."""
        values = self.metrics(arch)
        return float(sum(max(0.0, values[b.key] / b.value - 1.0) for b in self.bounds))

    def report(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Per bound: constraint, metric, target, bound, value, slack (bound - value) and whether it holds."""
        rows = []
        for b in self.bounds:
            v = values.get(b.key)
            v = float(v) if isinstance(v, (int, float)) else math.nan
            rows.append({"constraint": str(b), "metric": b.metric, "target": b.target, "bound": b.value,
                         "value": v, "slack": b.value - v, "ok": bool(v <= b.value)})
        return rows

    # ---- what the space allows ---------------------------------------------------------------
    def separable(self) -> bool:
        return self.space.separable_layers() is not None and all(
            getattr(self.models[b.target], "separable", False) for b in self.bounds if b.metric == "latency_ms")

    def _per_choice(self, metric: str) -> tuple[float, list[np.ndarray]] | None:
        """(fixed part, per decision per choice values) of a layer-spec metric on a separable space;
        peak memory is a max, params and MACs sums."""
        sep = self.space.separable_layers()
        if sep is None:
            return None
        from search_spaces.memory import peak_memory_mb
        from search_spaces.op_params import layer_params
        from search_spaces.ops import layer_macs
        if metric == "peak_memory_mb":
            return peak_memory_mb(sep[0]), [np.array([peak_memory_mb(c) for c in d]) for d in sep[1]]
        count = layer_params if metric == "params_m" else layer_macs
        return (sum(count(s) for s in sep[0]) / 1e6,
                [np.array([sum(count(s) for s in c) / 1e6 for c in d]) for d in sep[1]])

    def minimum(self, b: Bound) -> float | None:
        """The least value of b's metric over the space (None where it cannot be computed)."""
        if b.metric == "latency_ms":
            model = self.models[b.target]
            return float(model.min_ms()) if getattr(model, "separable", False) else None
        got = self._per_choice(b.metric)
        if got is None:
            return None
        fixed, per = got
        if b.metric == "peak_memory_mb":
            return float(max([fixed, *(v.min() for v in per)]))
        return float(fixed + sum(v.min() for v in per))

    def check_possible(self) -> None:
        """SearchError (exit 1) naming the minimum when a bound is below every arch's value."""
        for b in self.bounds:
            low = self.minimum(b)
            if low is not None and b.value < low - 1e-12:
                where = f" on {b.target}" if b.target else ""
                raise SearchError(f"constraint {b} is impossible: the smallest {self.space.name} arch has "
                                  f"{b.label} = {low:.4g} {_UNITS[b.metric]}{where}")

    def check_jointly_possible(self) -> None:
        """SearchError when, on a separable space, no arch meets all bounds at once (one MILP)."""
        tables = self.tables() if len(self.bounds) > 1 else None
        if not tables:
            return
        from nas.strategies.exact import solve_choice_knapsack
        zero = AdditiveTable(0.0, tuple(np.zeros(len(d.choices)) for d in self.space.decisions))
        if solve_choice_knapsack(zero, {k: t for k, (t, _) in tables.items()},
                                 {k: b for k, (_, b) in tables.items()}) is None:
            raise SearchError(f"constraints {', '.join(map(str, self.bounds))} cannot hold together: no "
                              f"{self.space.name} arch meets all of them (each alone is possible)")

    def tables(self) -> dict[str, tuple[AdditiveTable, float]] | None:
        """Additive (table, bound) per bound on a separable space, for exact and evolution's repair:
        sums for params/MACs/latency; peak memory as a 0/1 table of the choices over the bound
        (bound 0.5: none of them may be picked). None when the space or a model is not separable."""
        if not self.separable():
            return None
        problem = SearchProblem(self.space, self.models)
        out: dict[str, tuple[AdditiveTable, float]] = {}
        for b in self.bounds:
            if b.metric == "latency_ms":
                table = problem.latency_table(b.target)   # type: ignore[arg-type]
                if table is None:
                    return None
                out[b.key] = (table, b.value)
                continue
            got = self._per_choice(b.metric)
            if got is None:
                return None
            fixed, per = got
            if b.metric == "peak_memory_mb":
                out[b.key] = (AdditiveTable(float(fixed > b.value), tuple((v > b.value).astype(float) for v in per)), 0.5)
            else:
                out[b.key] = (AdditiveTable(float(fixed), tuple(per)), b.value)
        return out

    # ---- projection --------------------------------------------------------------------------
    def project(self, arch: Arch, preference: Sequence[np.ndarray] | None = None) -> Arch | None:
        """The feasible arch nearest `arch`; None when none was found.

        Separable spaces: exact - the arch maximising the summed `preference` (per decision per
        choice, e.g. log-probabilities of the architecture weights; default: +1 for keeping each
        decision's choice) under every bound (a multiple-choice knapsack, `exact`'s solver).
        Others: greedy repair - repeatedly the single-decision change with the largest drop in
        `violation` per unit of preference lost, until every bound holds."""
        if self.feasible(arch):
            return arch
        codes = self.space.encode(arch)
        pref = [np.asarray(p, dtype=np.float64) for p in preference] if preference is not None else [
            (np.arange(len(d.choices)) == codes[i]).astype(np.float64) for i, d in enumerate(self.space.decisions)]
        tables = self.tables()
        if tables is not None:
            from nas.strategies.exact import solve_choice_knapsack
            score = AdditiveTable(0.0, tuple(pref))
            got = solve_choice_knapsack(score, {k: t for k, (t, _) in tables.items()},
                                        {k: b for k, (_, b) in tables.items()}, True)
            if got is not None:
                try:
                    fixed = self.space.decode(got)
                except ArchError:
                    fixed = None
                if fixed is not None and self.feasible(fixed):
                    return fixed
        return self._greedy(codes, pref)

    def _greedy(self, codes: np.ndarray, pref: list[np.ndarray], steps: int = 200) -> Arch | None:
        codes = codes.copy()
        current = self.space.decode(codes)
        for _ in range(steps):
            v0 = self.violation(current)
            if v0 <= 0:
                return current
            best: tuple[float, Arch, int, int] | None = None
            for i, d in enumerate(self.space.decisions):
                for c in range(len(d.choices)):
                    if c == codes[i]:
                        continue
                    trial = codes.copy()
                    trial[i] = c
                    try:
                        cand = self.space.decode(trial)
                    except ArchError:
                        continue
                    gain = v0 - self.violation(cand)
                    if gain <= 1e-12:
                        continue
                    loss = max(float(pref[i][codes[i]] - pref[i][c]), 1e-6)
                    ratio = gain / loss
                    if best is None or ratio > best[0]:
                        best = (ratio, cand, i, c)
            if best is None:
                return None
            _, current, i, c = best
            codes[i] = c
        return current if self.feasible(current) else None

    def closest(self, archs: Sequence[Arch]) -> Arch | None:
        """The arch with the least violation among `archs`."""
        return min(archs, key=self.violation, default=None)


def make_budget(space: SearchSpace, texts: Sequence[str], latency_bounds: Mapping[str, float],
                models: Mapping[str, Any], load_model: Callable[[str], Any],
                implied: Mapping[str, float] | None = None) -> Budget:
    """The Budget of `--constraint` texts plus the `--latency-ms` bounds (target -> ms); latency
    models of constrained targets not searched are loaded with `load_model`. `implied`: metric (one
    of PLAIN) -> upper bound the evaluator can score (its `valid_bounds`); each is added, or tightens
    a --constraint on the same metric."""
    bounds = [parse_constraint(t) for t in texts]
    for metric, value in (implied or {}).items():
        if metric not in PLAIN:
            raise ValueError(f"an evaluator's valid bound must be on one of {', '.join(PLAIN)}, not {metric!r}")
        same = [i for i, b in enumerate(bounds) if b.metric == metric]
        if not same:
            bounds.append(Bound(metric, float(value)))
        elif bounds[same[0]].value > value:
            bounds[same[0]] = Bound(metric, float(value))
    given = {b.key for b in bounds}
    bounds += [Bound("latency_ms", float(ms), t) for t, ms in latency_bounds.items() if f"latency_ms.{t}" not in given]
    all_models = dict(models)
    for b in bounds:
        if b.metric == "latency_ms" and b.target not in all_models:
            all_models[b.target] = load_model(b.target)   # type: ignore[index]
    return Budget(space, bounds, all_models)


class BudgetEvaluator:
    """Adds the budget's metrics to every trial (last in the Compose: feasibility was judged on them)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __call__(self, arch: Arch) -> dict[str, float]:
        got = self.budget.metrics(arch)
        keep = {b.key for b in self.budget.bounds} | {"peak_memory_mb"}
        return {k: v for k, v in got.items() if k in keep}
