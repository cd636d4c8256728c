"""The default strategy: multi-gene mutation, uniform crossover, repair and fill toward the bound."""
from __future__ import annotations

import numpy as np
import pytest

from latency.targets import lut_model
from nas.core.errors import UsageError
from nas.evaluators.base import Compose, LatencyEvaluator
from nas.evaluators.catalog import make_evaluator
from nas.strategies.problem import SearchProblem
from nas.pipeline.runner import run_search
from nas.strategies.catalog import STRATEGIES
from nas.strategies.evolution import RegularizedEvolution
from nas.store.trial import COMPLETE, MemoryStore, Trial
from search_spaces.catalog import get_space

SPACE = get_space("mbconv")
CPU = lut_model("xeon-2.8ghz", SPACE)
BOUND = 8.0
#: exact optimum of this problem (tests/test_exact.py; issue 15 reports 359.8 M MACs)
OPTIMUM = 359_809_472


def feasible(arch) -> bool:  # type: ignore[no-untyped-def]
    return CPU.predict(arch) <= BOUND


def make(seed: int = 0, **opts) -> RegularizedEvolution:  # type: ignore[no-untyped-def]
    problem = SearchProblem(SPACE, {"xeon-2.8ghz": CPU}, {"xeon-2.8ghz": BOUND}, "zero-cost", {"proxy": "flops"})
    return RegularizedEvolution(SPACE, seed=seed, feasible=feasible, problem=problem, **opts)


EVALUATOR = Compose([LatencyEvaluator({"xeon-2.8ghz": CPU}), make_evaluator("zero-cost", SPACE, proxy="flops")])


def _fill(s: RegularizedEvolution, n: int) -> None:
    for i in range(n):
        a = s.ask()
        s.mark_asked(a)
        s.tell(Trial(i, a, EVALUATOR(a), COMPLETE, None, 0.0, 0))


def test_mutation_changes_several_genes_on_average() -> None:
    s = make(mutation_rate=3.0)
    genes = SPACE.parse_any("single-path-nas").genes
    changed = [sum(a != b for a, b in zip(genes, s._mutate(genes))) for _ in range(2000)]
    assert min(changed) >= 1 and max(changed) >= 4
    assert np.mean(changed) == pytest.approx(3.0 + (1 - 3 / 21) ** 21, abs=0.15)   # 3 expected, + the forced one


def test_uniform_crossover_takes_each_gene_from_a_parent() -> None:
    s = make()
    a, b = SPACE.parse_any("single-path-nas").genes, SPACE.parse_any("mobilenetv2-like").genes
    kids = [s._uniform_crossover(a, b) for _ in range(200)]
    assert all(all(g in (x, y) for g, x, y in zip(k, a, b)) for k in kids)
    differ = [i for i in range(len(a)) if a[i] != b[i]]
    from_b = np.mean([[k[i] == b[i] for i in differ] for k in kids])
    assert from_b == pytest.approx(0.5, abs=0.05)


def test_children_are_feasible_new_and_on_the_bound() -> None:
    s = make(seed=2)
    _fill(s, 200)
    archs = [t.arch for t in s.history]
    assert len(set(archs)) == len(archs) and all(feasible(a) for a in archs)
    # fill: no single decision can step to a costlier choice without breaking the bound
    table = s.latency["xeon-2.8ghz"]
    for a in archs[-20:]:
        codes = SPACE.encode(a)
        slack = BOUND - table(codes)[0]
        steps = [v[j] - v[codes[i]] for i, v in enumerate(table.values) for j in range(len(v)) if v[j] > v[codes[i]]]
        assert min(steps) > slack - 1e-9


def test_repair_without_fill_ends_under_the_bound() -> None:
    s = make(fill=0.0)
    heavy = SPACE.encode(SPACE.parse("k5e6 k5e6 k5e6 k5e6 | " * 5 + "k5e6"))
    fixed = s._repair(heavy)
    assert s.latency["xeon-2.8ghz"](fixed)[0] <= BOUND < s.latency["xeon-2.8ghz"](heavy)[0]


def test_state_is_rebuilt_from_history() -> None:
    s = make(seed=4)
    _fill(s, 80)
    again = make(seed=4)
    again.rebuild(s.history)
    other = make(seed=4)
    other.rebuild(list(reversed(s.history)))   # rebuild orders by trial number
    assert [again.ask() for _ in range(5)] == [other.ask() for _ in range(5)]


def test_default_reaches_99_percent_of_the_exact_optimum() -> None:
    found = []
    for seed in range(3):
        s = make(seed=seed)
        trials = run_search(s, EVALUATOR, s.trials(500), MemoryStore(), progress=False)
        found.append(max(t.metrics["score"] for t in trials if t.metrics["latency_ms"] <= BOUND))
    pct = 100 * np.array(found) / OPTIMUM
    assert pct.max() <= 100.0 and pct.min() >= 99.5, pct   # 98.8 mean before the surrogate and local phase


def test_population_follows_the_budget() -> None:
    sizes = {}
    for budget in (30, 100, 250, 1000):
        s = make()
        s.trials(budget)
        sizes[budget] = (s.population, s.sample_size)
    assert sizes == {30: (10, 5), 100: (20, 10), 250: (50, 25), 1000: (50, 25)}
    given = make(population=30, sample_size=3)
    given.trials(100)
    assert (given.population, given.sample_size) == (30, 3)


def test_surrogate_guidance_finds_better_archs_at_equal_budget() -> None:
    """Half the children repaired/filled along the surrogate's best score-per-ms trades beat random steps."""
    def best(guide: float, seed: int) -> float:
        s = make(seed=seed, guide=guide)
        s.trials(150)
        _fill(s, 150)
        return max(t.metrics["score"] for t in s.history) / OPTIMUM

    guided, plain = (np.mean([best(g, seed) for seed in (11, 12, 13)]) for g in (0.5, 0.0))
    assert guided > plain + 0.01, (guided, plain)


def test_candidate_list_children_are_mutations_inside_it() -> None:
    """nb201 restricted to NASLib's 724 archs: children are neighbours inside the list, not random redraws."""
    space = get_space("nb201", candidates="naslib")
    s = RegularizedEvolution(space, seed=0)
    s.trials(60)
    redraws = []
    sample = s.sample
    s.sample = lambda: redraws.append(len(s.history)) or sample()   # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    for i in range(60):
        a = s.ask()
        s.mark_asked(a)
        s.tell(Trial(i, a, {"score": float(rng.random())}, COMPLETE, None, 0.0, 0))
    assert all(a in space._candidates for a in s.seen) and len(s.seen) == 60
    assert len([n for n in redraws if n >= s.population]) <= 4   # of 48 children (all 48 neighbours seen: rare)


def test_without_tables_it_still_searches_with_feasible_only() -> None:
    s = RegularizedEvolution(SPACE, seed=0, feasible=feasible, population=10, sample_size=5)
    assert s.latency is None
    trials = run_search(s, EVALUATOR, 40, MemoryStore(), progress=False)
    assert all(t.metrics["latency_ms"] <= BOUND for t in trials) and len({t.arch for t in trials}) == 40


@pytest.mark.parametrize("opts,match", [({"crossover": 1.5}, "crossover"), ({"mutation_rate": 0}, "mutation_rate"),
                                        ({"fill": -1}, "fill"), ({"repair": "yes"}, "repair"),
                                        ({"population": 1}, "population"), ({"local": 1.0}, "local"),
                                        ({"guide": 2}, "guide")])
def test_bad_options(opts: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        STRATEGIES.get("evolution")(SPACE, **opts)


def test_local_phase_moves_on_from_an_exhausted_centre() -> None:
    """In the local phase, 20 old children in a row around the best arch (its neighbourhood evaluated) make
    the next ask step from the next fittest arch, so the tries per trial stay bounded in long runs."""
    s = make()
    s.trials(60)   # population 12, local phase from trial 48
    _fill(s, 48)
    best = s._centres[0][2]
    assert best is s._best
    misses = {"left": 25}
    real_is_new = s.is_new

    def is_new(arch) -> bool:  # type: ignore[no-untyped-def]
        if misses["left"] > 0:
            misses["left"] -= 1
            return False   # as if the centre's neighbourhood were all evaluated
        return real_is_new(arch)
    s.is_new = is_new   # type: ignore[method-assign]
    child = s.ask()
    assert misses["left"] == 0 and s._centres[0][2] is not best            # moved on after 20 misses
    assert -s._centres[0][0] <= s.fitness(best) and feasible(child) and real_is_new(child)
    s.is_new = real_is_new   # type: ignore[method-assign]
    kept = s._centres[0][2]
    s.ask()
    assert s._centres[0][2] is kept                                       # a centre with new children stays
