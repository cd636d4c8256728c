"""`nas bench strategies`: exact references, scoring (best feasible accuracy, hypervolume), comparisons."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nas.bench.strategies import curves, reference, setup_for, strategy_benchmark
from nas.core.errors import UsageError


@pytest.fixture(scope="module")
def nb201_ref() -> dict:
    return reference(setup_for("nb201"))


def test_reference_is_the_exact_optimum_of_the_candidates(nb201_ref) -> None:  # type: ignore[no-untyped-def]
    from latency.targets import lut_model
    from nas.evaluators.tabular import truth_table
    from search_spaces.catalog import get_space
    space = get_space("nb201", candidates="naslib")
    model = lut_model("pixel3", space, False)
    truth = truth_table("nb201", "cifar10")
    rows = [(truth[space.format(a)], model.predict(a)) for a in space._candidates.archs]
    feasible = [acc for acc, ms in rows if ms <= 14.0]
    assert nb201_ref["archs"] == len(rows) == 724 and nb201_ref["feasible"] == len(feasible)
    assert nb201_ref["best_feasible_accuracy"] == max(feasible) < nb201_ref["best_accuracy"] == max(r[0] for r in rows)
    assert nb201_ref["reference_point"] == {"accuracy": min(r[0] for r in rows), "latency_ms": 14.0}


def test_curves_score_best_feasible_accuracy_and_hypervolume() -> None:
    acc = np.array([50.0, 90.0, 70.0, 80.0, math.nan])
    lat = np.array([1.0, 20.0, 2.0, 4.0, math.inf])     # 90 is infeasible (bound 10), the last trial failed
    ref, front = (40.0, 10.0), 100.0
    best, hv = curves(acc, lat, 10.0, ref, front, [1, 2, 3, 5])
    assert best.tolist() == [50.0, 50.0, 70.0, 80.0]
    # area above acc 40 and below 10 ms, by latency slices: (50, 1) -> 10 x 9 = 90; + (70, 2) -> 10 x 1 +
    # 30 x 8 = 250; + (80, 4) -> 10 x 1 + 30 x 2 + 40 x 6 = 310
    assert hv.tolist() == pytest.approx([0.9, 0.9, 2.5, 3.1])


def test_every_feasible_arch_evaluated_gives_the_whole_front(nb201_ref) -> None:  # type: ignore[no-untyped-def]
    from latency.targets import lut_model
    from nas.evaluators.tabular import truth_table
    from search_spaces.catalog import get_space
    space = get_space("nb201", candidates="naslib")
    model = lut_model("pixel3", space, False)
    truth = truth_table("nb201", "cifar10")
    acc = np.array([truth[space.format(a)] for a in space._candidates.archs])
    lat = np.array([model.predict(a) for a in space._candidates.archs])
    ref = (nb201_ref["reference_point"]["accuracy"], 14.0)
    best, hv = curves(acc, lat, 14.0, ref, nb201_ref["front_hypervolume"], [len(acc)])
    assert best[0] == nb201_ref["best_feasible_accuracy"] and hv[0] == pytest.approx(1.0)


def test_benchmark_compares_with_random_at_equal_budget() -> None:
    out = strategy_benchmark("nb201", strategies=["evolution", "nsga2"], seeds=3, budgets=(5, 30), progress=False,
                             curve_points=5)
    json.dumps(out)   # JSON-ready
    assert set(out["strategies"]) == {"random", "evolution", "nsga2"}
    assert out["strategies"]["evolution"]["score"] == "best_accuracy"
    assert out["strategies"]["nsga2"]["score"] == "hypervolume"
    opt = out["reference"]["best_feasible_accuracy"]
    for name, row in out["strategies"].items():
        means = [row["budgets"][b]["best_accuracy"]["mean"] for b in ("5", "30")]
        assert means[0] <= means[1] <= opt                          # more evaluations never lose the best
        assert 0 < row["budgets"]["30"]["hypervolume"]["max"] <= 1.0
        if name != "random":
            assert 0 <= row["budgets"]["30"]["p_value"] <= 1
            assert row["budgets"]["30"]["random"] == out["strategies"]["random"]["budgets"]["30"][row["score"]]


def test_bad_input_names_the_valid_choices() -> None:
    with pytest.raises(UsageError, match="valid spaces: nats_sss, nb201"):
        strategy_benchmark("mbconv", progress=False)
    with pytest.raises(UsageError, match="not benchmarked here; valid: evolution"):
        strategy_benchmark("nb201", strategies=["darts"], progress=False)
    with pytest.raises(UsageError, match="at least 2"):
        strategy_benchmark("nb201", seeds=1, progress=False)
    with pytest.raises(UsageError, match="--latency-ms 0.01 on pixel3: only archs at the space's lowest accuracy"):
        strategy_benchmark("nb201", latency_ms=0.01, seeds=2, progress=False)
    with pytest.raises(UsageError, match="--latency-ms must be positive"):
        strategy_benchmark("nb201", latency_ms=-1.0, seeds=2, progress=False)


def test_budget_above_the_feasible_set_is_refused() -> None:
    """300 evaluations of nasnet's 276 feasible cells (or 600 of nb201's 492) would see every feasible arch:
    regret 0 for every strategy, random search included; the benchmark refuses before running anything."""
    with pytest.raises(UsageError, match="--budgets 600 is more than the 492 feasible archs of nb201"):
        strategy_benchmark("nb201", seeds=2, budgets=(50, 600), progress=False)
