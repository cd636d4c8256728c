"""`--strategy exact`: equals brute force, beats every searched arch, refuses problems it cannot solve."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from nas.core.errors import UsageError
from nas.strategies.problem import AdditiveTable, SearchProblem
from nas import SearchConfig, search
from nas.strategies.exact import solve_choice_knapsack

#: the exact optimum of mbconv / shipped cpu table / MACs / 8 ms, as issue 15 reports it (359.8 M MACs)
CPU_8MS_OPTIMUM = 359_809_472


def _brute(score: AdditiveTable, lat: dict[str, AdditiveTable], bounds: dict[str, float], maximize: bool,
           exclude: list[tuple[int, ...]] = ()) -> float | None:
    codes = np.array(list(itertools.product(*[range(len(v)) for v in score.values])))
    ok = np.ones(len(codes), dtype=bool)
    for t, b in bounds.items():
        ok &= lat[t](codes) <= b
    for ex in exclude:
        ok &= ~(codes == np.array(ex)).all(axis=1)
    if not ok.any():
        return None
    s = score(codes)[ok]
    return float(s.max() if maximize else s.min())


def _table(rng: np.random.Generator, sizes: list[int], integer: bool) -> AdditiveTable:
    vals = [rng.integers(0, 10**6, n).astype(float) if integer else rng.uniform(0.1, 3.0, n) for n in sizes]
    return AdditiveTable(float(rng.uniform(0, 5)), tuple(vals))


@pytest.mark.parametrize("seed", range(6))
def test_solver_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = list(rng.integers(2, 6, 7))
    score = _table(rng, sizes, integer=True)
    targets = ["a", "b"][: 1 + seed % 2]
    lat = {t: _table(rng, sizes, integer=False) for t in targets}
    for q in (0.05, 0.3, 0.7):
        bounds = {t: float(np.quantile(lat[t](np.array(list(itertools.product(*[range(n) for n in sizes])))), q))
                  for t in targets}
        for maximize in (True, False):
            codes = solve_choice_knapsack(score, lat, bounds, maximize)
            expected = _brute(score, lat, bounds, maximize)
            if expected is None:
                assert codes is None
                continue
            assert codes is not None and all(lat[t](codes)[0] <= bounds[t] for t in targets)
            assert score(codes)[0] == expected
            # the next best, with the optimum excluded
            second = solve_choice_knapsack(score, lat, bounds, maximize, [codes])
            expected2 = _brute(score, lat, bounds, maximize, [tuple(codes)])
            assert (second is None) == (expected2 is None)
            if second is not None:
                assert score(second)[0] == expected2


def test_impossible_bound_gives_none() -> None:
    score = AdditiveTable(0.0, (np.array([1.0, 2.0]),))
    lat = {"t": AdditiveTable(1.0, (np.array([1.0, 2.0]),))}
    assert solve_choice_knapsack(score, lat, {"t": 1.5}) is None


def _run(strategy: str, trials: int, seed: int = 0, out: Path | None = None, **extra) -> list:  # type: ignore[no-untyped-def]
    cfg = SearchConfig(space="mbconv", targets=("xeon-2.8ghz",), latency_ms=(8.0,), strategy=strategy,
                       evaluator_options={"proxy": "flops"}, trials=trials, seed=seed,
                       out=str(out) if out else None, **extra)
    return search(cfg, progress=False).trials


def test_exact_optimum_on_mbconv_cpu_beats_every_searched_arch() -> None:
    exact = _run("exact", 4)
    scores = [t.metrics["score"] for t in exact]
    assert scores[0] == CPU_8MS_OPTIMUM
    assert scores == sorted(scores, reverse=True) and len({t.arch for t in exact}) == 4
    assert all(t.metrics["latency_ms"] <= 8.0 for t in exact)
    for strategy in ("random", "evolution"):
        found = max(t.metrics["score"] for t in _run(strategy, 200, seed=1) if t.metrics["latency_ms"] <= 8.0)
        assert found <= scores[0]


def test_exact_resumes_to_the_same_sequence(tmp_path: Path) -> None:
    fresh = _run("exact", 3)
    _run("exact", 2, out=tmp_path / "r")
    resumed = _run("exact", 3, out=tmp_path / "r")
    assert [t.arch for t in resumed] == [t.arch for t in fresh]


@pytest.mark.parametrize("cfg,match", [
    ({"evaluator_options": {"proxy": "synflow"}}, "not a sum over layers.*proxy=flops.*--strategy evolution"),
    ({"evaluator": "train", "evaluator_options": {}}, "--evaluator train.*not a sum over layers"),
    ({"space": "nasnet", "targets": ("xeon-2.8ghz",), "latency_ms": ()}, "nasnet.*not separable.*--strategy evolution"),
])
def test_unsolvable_searches_are_usage_errors_that_write_nothing(cfg: dict, match: str, tmp_path: Path) -> None:
    base = {"space": "mbconv", "targets": ("xeon-2.8ghz",), "latency_ms": (8.0,), "strategy": "exact",
            "evaluator_options": {"proxy": "flops"}, "trials": 2, "out": str(tmp_path / "o")}
    with pytest.raises(UsageError, match=match):
        search(SearchConfig(**{**base, **cfg}), progress=False)
    assert not (tmp_path / "o").exists()


def test_exact_outside_search_names_what_to_use() -> None:
    from nas.strategies.catalog import STRATEGIES
    from search_spaces.catalog import get_space
    with pytest.raises(UsageError, match="evolution"):
        STRATEGIES.get("exact")(get_space("mbconv"))
    problem = SearchProblem(get_space("mbconv"), evaluator="zero-cost", evaluator_options={"proxy": "params"})
    strat = STRATEGIES.get("exact")(get_space("mbconv"), problem=problem)   # no bound: the largest net
    best = strat.ask()
    assert all(g in ("k5e6",) for g in best.genes)


def test_cli_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    code = main(["search", "--space", "mbconv", "--target", "xeon-2.8ghz", "--latency-ms", "8", "--strategy", "exact",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not a sum over layers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
