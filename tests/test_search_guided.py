"""Issue 26: predictor-guided search (bo, screened evolution), linear-cost surrogate, BLAS pinning, paired tests."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from nas.bench.strategies import _compare, holm
from nas.core.errors import UsageError
from nas.store.trial import Trial
from nas.strategies.evolution import RegularizedEvolution
from nas.strategies.predictor import PredictorSearch
from nas.strategies.surrogate import GP, ArchPool, Encoder
from search_spaces.catalog import get_space


def test_holm_matches_hand_computation() -> None:
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06, monotone), 0.5 (x1 = 0.5); NaN kept
    assert holm([0.03, 0.01, 0.5, math.nan, 0.02]) == pytest.approx([0.06, 0.04, 0.5, math.nan, 0.06], nan_ok=True)


def test_paired_test_is_wilcoxon_on_differences() -> None:
    from scipy.stats import wilcoxon
    a = np.array([1.0, 2.0, 3.5, 4.0, 6.0, 7.0])
    b = np.array([0.5, 2.5, 1.0, 1.0, 2.0, 1.5])
    assert _compare(a, b)["p_value"] == pytest.approx(wilcoxon(a - b).pvalue)
    assert _compare(a, a)["p_value"] == 1.0


def test_gp_interpolates_and_is_uncertain_away_from_data() -> None:
    space = get_space("nats_sss")
    enc = Encoder(space)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, size=(60, 5))
    y = codes.sum(1).astype(float)   # accuracy grows with channels: a smooth ordinal function
    gp = GP().fit(enc(codes), y)
    mu, sd = gp.predict(enc(codes[:5]))
    assert np.abs(mu - y[:5]).max() < 0.5 and sd.max() < 1.0
    far = np.full((1, 5), 7)
    assert gp.predict(enc(far))[0][0] > np.median(y)   # extrapolates the trend upward


def test_pool_of_a_candidate_list_and_of_a_small_space() -> None:
    pool = ArchPool.build(get_space("nb201", candidates="naslib"))
    assert pool is not None and len(pool.codes) == 724
    pool = ArchPool.build(get_space("nats_sss"))
    assert pool is not None and len(pool.codes) == 32768 and len({tuple(c) for c in pool.codes[:100]}) == 100
    assert ArchPool.build(get_space("mbconv")) is None   # too many genotypes: sampled per ask


def _run(strategy, score, n):  # type: ignore[no-untyped-def]
    for i in range(n):
        arch = strategy.ask()
        strategy.mark_asked(arch)
        strategy.tell(Trial(number=i, arch=arch, metrics={"score": score(arch)}))
    return strategy


def _nb201_regret(name: str, seeds: range, evaluations: int) -> float:
    """Mean regret (ground truth) of strategy `name` on the benchmark's nb201 problem over `seeds`."""
    from nas.bench.strategies import reference, run_strategy, setup_for
    setup = setup_for("nb201")
    opt = reference(setup)["best_feasible_accuracy"]
    out = []
    for seed in seeds:
        acc, lat = run_strategy(setup, name, seed, evaluations)
        out.append(opt - acc[lat <= setup.latency_ms].max())
    return float(np.mean(out))


def test_bo_beats_random_on_nb201_truth() -> None:
    """Ground truth (the benchmark's nb201 problem), 60 evaluations, seeds 200-203 (not the report's)."""
    # measured: random 0.357, bo 0.225 (evolution 0.405 here: 4 seeds at 60 evaluations are noisy; the
    # 20-seed benchmark in benchmarks/readme_figures.py is where the strategies are compared)
    assert _nb201_regret("bo", range(200, 204), 60) < 0.75 * _nb201_regret("random", range(200, 204), 60)


def test_bo_counts_random_and_guided_asks() -> None:
    s = _run(PredictorSearch(get_space("nb201", candidates="naslib"), seed=0, init=5), lambda a: 1.0, 12)
    assert s.stats == {"random": 5, "guided": 7} and len({t.arch for t in s.history}) == 12


def test_incremental_ridge_equals_a_fit_on_the_whole_history() -> None:
    from nas.pipeline.config import SearchConfig
    from nas.pipeline.search import plan, run, train
    cfg = SearchConfig(space="mbconv", targets=("xeon-2.8ghz",), latency_ms=(8.0,), trials=120, seed=3,
                       evaluator_options={"proxy": "flops"})
    p = plan(cfg, progress=False)
    run(p, train(p, False), progress=False)
    s = p.strategy
    assert isinstance(s, RegularizedEvolution) and s.latency is not None
    s._fit = (-1, None)
    w = s._surrogate()
    value = next(iter(s._steps().values()))[0]
    xs = np.stack([np.arange(len(value)) * value.shape[1] + space_codes for space_codes in
                   (s.space.encode(t.arch) for t in s.history)])
    x = np.zeros((len(xs), value.size))
    x[np.repeat(np.arange(len(xs)), xs.shape[1]), xs.ravel()] = 1.0
    y = np.array([s.fitness(t) for t in s.history])
    y = (y - y.mean()) / y.std()
    direct = np.linalg.solve(x.T @ x + np.eye(value.size), x.T @ y).reshape(value.shape)
    finite = np.isfinite(value)
    assert w is not None and np.allclose(w[finite], direct[finite], atol=1e-8)


def test_blas_threads_env_is_checked(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nas.pipeline.threads import blas_threads, search_blas_threads
    monkeypatch.setenv("NAS_BLAS_THREADS", "zero")
    with pytest.raises(UsageError, match="NAS_BLAS_THREADS='zero'"):
        blas_threads()
    monkeypatch.setenv("NAS_BLAS_THREADS", "1")
    from threadpoolctl import threadpool_info
    with search_blas_threads():
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")


def test_bo_option_errors_name_the_value() -> None:
    with pytest.raises(UsageError, match="bo init must be an integer >= 2, got 1"):
        PredictorSearch(get_space("nats_sss"), init=1)
    with pytest.raises(UsageError, match="evolution screen"):
        RegularizedEvolution(get_space("nats_sss"), screen=0)


def test_screened_pool_mixes_random_feasible_archs_of_the_whole_space() -> None:
    """`explore`: part of the screened pool is random feasible new archs (from the candidate list's pool)."""
    from nas.strategies.screening import Screen
    space = get_space("nb201", candidates="naslib")
    screen = Screen(space, lambda t: 0.0)
    rng = np.random.default_rng(0)
    archs = space._candidates.archs
    taken, slow = set(archs[:300]), set(archs[300::2])   # evaluated; over the bound
    got = screen.wild(30, lambda a: a not in taken, lambda a: a not in slow, rng)
    assert len(got) == 30 and len(set(got)) == 30 and not (taken | slow) & set(got)
    masked = len(archs) - int(screen._pool.ok.sum())
    assert masked > 0 and set(np.array(archs, dtype=object)[~screen._pool.ok]) <= slow   # infeasible: masked out
    big = Screen(get_space("mbconv"), lambda t: 0.0)   # no pool: plain samples, feasibility left to the ranking
    assert len(big.wild(5, lambda a: True, lambda a: False, rng)) == 5 and big._pool is None
    with pytest.raises(UsageError, match="evolution explore"):
        RegularizedEvolution(space, explore=1.5)


def test_default_evolution_beats_random_on_nb201_truth() -> None:
    """Ground truth (the benchmark's nb201 problem), 100 evaluations, seeds 200-202 (not the report's nor
    the tuning seeds 100-119): the default strategy (random pool share `explore` 0.8 in its GP screening)
    finds the optimum on all three; random search misses it on all three (measured 0.090, 0.090, 0.130)."""
    base = _nb201_regret("random", range(200, 203), 100)
    assert base > 0.05 and _nb201_regret("evolution", range(200, 203), 100) <= 0.5 * base
