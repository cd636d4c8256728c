"""`exact` ranks the k best archs of a separable problem with one dynamic program (nas.strategies.kbest)."""
from __future__ import annotations

import itertools
import time

import numpy as np

from nas.strategies.exact import solve_choice_knapsack
from nas.strategies.kbest import k_best
from nas.strategies.problem import AdditiveTable


def _tables(seed: int, sizes: list[int]) -> tuple[AdditiveTable, AdditiveTable]:
    rng = np.random.default_rng(seed)
    lat = AdditiveTable(1.0, tuple(rng.uniform(0, 2, n) for n in sizes))
    score = AdditiveTable(0.0, tuple(v * 3 + rng.normal(0, 1, len(v)) for v in lat.values))  # correlated
    return score, lat


def test_k_best_matches_brute_force() -> None:
    sizes = [3, 4, 2, 5, 3]
    score, lat = _tables(0, sizes)
    bound = lat.const + sum(float(np.median(v)) for v in lat.values)
    all_codes = np.array(list(itertools.product(*[range(n) for n in sizes])))
    ok = lat(all_codes) <= bound
    brute = np.sort(score(all_codes[ok]))[::-1]
    for k in (1, 7, 40, int(ok.sum()) + 5):
        got = k_best(score, lat, bound, k)
        vals = score(np.array(got))
        assert len(got) == min(k, int(ok.sum())) and np.all(lat(np.array(got)) <= bound)
        assert np.allclose(vals, brute[:len(got)])   # the k best scores, best first
    low = k_best(score, lat, bound, 5, maximize=False)
    assert np.allclose(score(np.array(low)), np.sort(score(all_codes[ok]))[:5])


def test_k_best_agrees_with_the_integer_program_and_is_fast() -> None:
    sizes = [4, 5, 5, 5, 4, 5, 5, 5, 4, 5, 5, 5, 4, 5, 5, 5, 4, 5, 5, 5, 4]   # mbconv's decisions
    score, lat = _tables(1, sizes)
    bound = lat.const + sum(float(np.quantile(v, 0.4)) for v in lat.values)
    t0 = time.process_time()
    ranked = k_best(score, lat, bound, 500)
    cpu = time.process_time() - t0
    assert len(ranked) == 500 and cpu < 10.0
    seen: list[np.ndarray] = []
    for n in range(5):   # the MILP's n-th best, with the first n-1 cut off
        codes = solve_choice_knapsack(score, {"t": lat}, {"t": bound}, True, seen)
        assert codes is not None
        assert float(score(codes)[0]) == float(score(ranked[n])[0]) or np.isclose(score(codes)[0], score(ranked[n])[0])
        seen.append(codes)
