"""Strategies: seeded, constraint-respecting, rebuildable from history; the runner keeps failures."""
from __future__ import annotations

import numpy as np
import pytest

from nas.core.errors import SearchError
from nas.pipeline.runner import run_search
from nas.strategies.catalog import STRATEGIES
from nas.store.trial import MemoryStore
from search_spaces.catalog import get_space

SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
#: strategies that search with a bare feasibility test (exact needs the problem's tables: tests/test_exact.py)
SEARCHING = [n for n in STRATEGIES.names() if not getattr(STRATEGIES.get(n), "requires_problem", False)]


def score(arch) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """A cheap deterministic objective: prefer big kernels and expansions."""
    return {"score": float(sum(int(g[1]) + int(g[3]) for g in arch.genes if g != "skip"))}


def n_skips(arch) -> int:  # type: ignore[no-untyped-def]
    return sum(g == "skip" for g in arch.genes)


@pytest.mark.parametrize("name", SEARCHING)
def test_seeded_and_constraint_respected(name: str) -> None:
    def feasible(a):  # type: ignore[no-untyped-def]
        return n_skips(a) >= 5

    runs = [run_search(STRATEGIES.get(name)(SPACE, seed=3, feasible=feasible), score, 40, progress=False)
            for _ in range(2)]
    assert [t.arch for t in runs[0]] == [t.arch for t in runs[1]]
    assert all(n_skips(t.arch) >= 5 for t in runs[0])


def test_evolution_beats_random_on_simple_objective() -> None:
    best = {}
    for name in ("random", "evolution"):
        vals = []
        for seed in range(3):
            trials = run_search(STRATEGIES.get(name)(SPACE, seed=seed), score, 150, progress=False)
            vals.append(max(t.metrics["score"] for t in trials))
        best[name] = np.mean(vals)
    assert best["evolution"] > best["random"]


@pytest.mark.parametrize("name", SEARCHING)
def test_resume_continues_from_store(name: str) -> None:
    store = MemoryStore()
    run_search(STRATEGIES.get(name)(SPACE, seed=1), score, 25, store, progress=False)
    first = store.trials()
    all_trials = run_search(STRATEGIES.get(name)(SPACE, seed=1), score, 40, store, progress=False)
    assert len(all_trials) == 40 and all_trials[:25] == first
    assert [t.number for t in all_trials] == list(range(40))


def test_failed_evaluation_becomes_failed_trial() -> None:
    def flaky(arch):  # type: ignore[no-untyped-def]
        if n_skips(arch) % 2:
            raise RuntimeError("boom")
        return score(arch)

    trials = run_search(STRATEGIES.get("evolution")(SPACE, seed=0), flaky, 30, progress=False)
    failed = [t for t in trials if not t.ok]
    assert len(trials) == 30 and failed
    assert all("boom" in (t.error or "") for t in failed)


def test_infeasible_constraint_raises() -> None:
    strat = STRATEGIES.get("random")(SPACE, seed=0, feasible=lambda a: False)
    with pytest.raises(SearchError, match="constraints"):
        strat.ask()


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_in_flight_archs_are_not_asked_again(name: str) -> None:
    """With several evaluations in flight (Ray), an arch handed out and not yet told is not proposed again."""
    from nas.store.trial import COMPLETE, Trial
    space = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
    opts = {"population": 2, "sample_size": 2} if name == "evolution" else {}
    s = STRATEGIES.get(name)(space, seed=0, **opts)
    for i in range(2):                               # fill evolution's population
        a = s.ask()
        s.mark_asked(a)
        s.tell(Trial(i, a, {"score": float(i)}, COMPLETE, None, 0.0, 0))
    asked = []
    for _ in range(40):
        a = s.ask()
        s.mark_asked(a)
        asked.append(a)
    assert len(set(asked)) == len(asked) and not set(asked) & s.seen
    s.tell(Trial(2, asked[0], {"score": 5.0}, COMPLETE, None, 0.0, 0))
    assert asked[0] not in s.pending and asked[0] in s.seen
