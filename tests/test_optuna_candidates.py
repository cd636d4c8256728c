"""Optuna samplers on a candidate list propose inside it: projection, counted, no random fallback."""
from __future__ import annotations

import numpy as np
import pytest

from nas.store.trial import Trial
from nas.strategies.optuna_sampler import TPE, OptunaNSGA2
from search_spaces.catalog import get_space


def _loop(strategy, score, n):  # type: ignore[no-untyped-def]
    asked = []
    for i in range(n):
        arch = strategy.ask()
        strategy.mark_asked(arch)
        asked.append(arch)
        strategy.tell(Trial(number=i, arch=arch, metrics={"score": score(arch), "latency_ms": 1.0}))
    return asked


@pytest.mark.parametrize("cls", [TPE, OptunaNSGA2])
def test_optuna_stays_in_the_list_and_counts_projections(cls) -> None:  # type: ignore[no-untyped-def]
    space = get_space("nb201", candidates="naslib")
    cands = space._candidates
    # score: number of conv3x3 edges - structure a sampler can learn
    asked = _loop(cls(space, seed=0), lambda a: float(sum(g == "nor_conv_3x3" for g in a.genes)), 40)
    assert all(a in cands for a in asked) and len(set(asked)) == 40
    s = cls(space, seed=0)
    _loop(s, lambda a: 0.0, 30)
    assert s.stats["random"] == 0 and s.stats["proposals"] == 30
    # 724 of 15,625 archs are listed: most proposals fall outside and are projected
    assert 20 <= s.stats["replaced"] <= 30


def test_projection_is_the_nearest_new_feasible_candidate() -> None:
    space = get_space("nb201", candidates="naslib")
    cands = space._candidates
    target = cands.archs[5]
    s = TPE(space, seed=1, feasible=lambda a: a != target)
    genes = list(target.genes)
    s._ensure_study()
    arch = s._project(genes, cands)
    dist = lambda a: sum(x != y for x, y in zip(a.genes, genes))  # noqa: E731
    others = [dist(a) for a in cands.archs if a != target]
    assert arch != target and dist(arch) == min(others) and s.stats["replaced"] == 1


def test_by_distance_orders_by_hamming_distance() -> None:
    cands = get_space("nb201", candidates="naslib")._candidates
    genes = cands.archs[0].genes
    order = cands.by_distance(genes, np.random.default_rng(0))
    d = [sum(x != y for x, y in zip(cands.archs[i].genes, genes)) for i in order]
    assert order[0] == 0 and d == sorted(d) and sorted(order.tolist()) == list(range(len(cands)))
