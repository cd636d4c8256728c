"""How a `Budget` is enforced on each strategy family (split from `nas.strategies.constraints`).

`attach` hands the budget to a strategy before the search: exact solves with the budget's additive tables,
evolution repairs toward them, every strategy keeps the search's `feasible` test. `project_derived` ends a
weight-sharing or differentiable strategy on the feasible set, since those derive one arch from trained
weights and cannot sample under the bounds while they train.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import SearchError, UsageError
from nas.strategies.constraints import Budget


def attach(strategy: Any, budget: Budget, repair: bool = True) -> None:
    """Give `strategy` the budget: exact solves with its additive tables, evolution (and the
    weight-sharing strategies built on it) repairs toward them; every strategy keeps its `feasible`
    test, which the search built from the same budget. A bound `exact` cannot solve is a usage error."""
    from nas.strategies.evolution import RegularizedEvolution
    from nas.strategies.exact import ExactStrategy
    strategy.constraint_budget = budget   # not `budget`: evolution and exact keep their trial budget there
    if not budget:
        return
    tables = budget.tables()
    if tables is not None:   # a --latency-ms bound the strategy already holds under its target's name
        tables = {k: (t, b) for k, (t, b) in tables.items()
                  if not (k.startswith("latency_ms.") and getattr(strategy, "bounds", {}).get(k[11:]) == b)}
    if isinstance(strategy, ExactStrategy):
        if tables is None:
            raise UsageError(f"strategy 'exact' cannot enforce {', '.join(map(str, budget.bounds))}: a bounded "
                             f"metric is not a per-choice table of a separable space; use --strategy evolution")
        strategy.latency = {**(strategy.latency or {}), **{k: t for k, (t, _) in tables.items()}}
        strategy.bounds = {**strategy.bounds, **{k: b for k, (_, b) in tables.items()}}
    elif isinstance(strategy, RegularizedEvolution) and repair and tables:
        strategy.latency = {**(strategy.latency or {}), **{k: t for k, (t, _) in tables.items()}}
        strategy.bounds = {**strategy.bounds, **{k: b for k, (_, b) in tables.items()}}
        strategy._step_cache = None


def _preference(strategy: Any) -> list[np.ndarray] | None:
    """Per decision per choice log-probabilities of a strategy's architecture weights, if it has them."""
    policy = getattr(strategy, "policy", None)
    if policy is None or not hasattr(policy, "logits"):
        return None
    return [lg.detach().float().log_softmax(0).cpu().numpy() for lg in policy.logits]


def project_derived(strategy: Any, budget: Budget | None) -> dict[str, Any] | None:
    """End a weight-sharing / differentiable strategy on the feasible set: its derived arch (first
    seed) is kept when it meets every bound, else projected (`Budget.project`, with the strategy's
    architecture weights as preference where it has them). The unconstrained arch, when it differs,
    is scored as a second trial (the score the projection cost). Returns what goes to
    `info["projection"]`; SearchError naming the closest arch when no feasible one is found."""
    seeds = list(getattr(strategy, "seeds", None) or [])
    if not budget or not seeds:
        return None
    space = strategy.space
    derived = seeds[0]
    raw = getattr(strategy, "unconstrained", None) or derived
    pref = _preference(strategy)
    keys = [b.key for b in budget.bounds]

    def values(a: Arch) -> dict[str, float]:
        m = budget.metrics(a)
        return {k: round(m[k], 6) for k in keys}

    if budget.feasible(derived):
        final, method = derived, ("none: the derived arch meets every bound" if derived == raw else
                                  f"the strategy's own repair ({strategy.name})")
    else:
        final = budget.project(raw if pref is not None else derived, pref)
        method = ("exact: most probable arch under every bound (knapsack on the separable tables)"
                  if budget.separable() and pref is not None else
                  "exact: fewest changed decisions under every bound (knapsack on the separable tables)"
                  if budget.separable() else "greedy repair on the latency / size models")
        if final is None:
            closest = budget.closest([raw, derived])
            got = values(closest) if closest is not None else {}
            raise SearchError(f"{strategy.name}: no arch met {', '.join(map(str, budget.bounds))}; closest found: "
                              f"{space.format(closest) if closest is not None else '-'} "
                              f"({', '.join(f'{k}={v:.4g}' for k, v in got.items())})")
    ra, fa = space.encode(raw), space.encode(final)
    changed = [{"decision": d.name, "from": d.choices[int(ra[i])], "to": d.choices[int(fa[i])]}
               for i, d in enumerate(space.decisions) if ra[i] != fa[i]]
    info = {"unconstrained": space.format(raw), "unconstrained_values": values(raw),
            "unconstrained_feasible": budget.feasible(raw), "projected": space.format(final),
            "projected_values": values(final), "method": method, "changed": changed}
    strategy.seeds = [final] + ([raw] if raw != final else [])
    if raw != final and getattr(strategy, "fixed_trials", None) is not None:
        strategy.fixed_trials = int(type(strategy).fixed_trials or 0) + 1   # score the unconstrained arch too
    strategy.info["projection"] = info
    return info
