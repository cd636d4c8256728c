"""Multi-objective search: Pareto helpers on hand-made points, objectives parsing, NSGA-II beating
random on a bi-objective toy, and the Optuna samplers' ask/tell bookkeeping (replay, rejects)."""
from __future__ import annotations

import numpy as np
import optuna
import pytest

from nas.core.errors import UsageError
from nas.pipeline.runner import run_search
from nas.strategies.catalog import STRATEGIES
from nas.strategies.base import parse_objectives
from nas.strategies.nsga2 import (
    crowding_distance,
    hypervolume_2d,
    nondominated_fronts,
    objective_matrix,
    pareto_front,
    select_population,
)
from nas.store.trial import FAILED, Trial
from search_spaces.catalog import get_space

SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
OBJ = (("score", True), ("latency_ms", False))


def toy(arch) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Conflicting objectives: bigger kernels/expansions raise the score and, faster, the latency."""
    ks = [(int(g[1]), int(g[3])) for g in arch.genes if g != "skip"]
    return {"score": float(sum(k + e for k, e in ks)), "latency_ms": float(sum(k * k * e for k, e in ks)) / 10}


# ---- Pareto helpers -------------------------------------------------------------------------------
POINTS = np.array([[1, 5], [2, 3], [4, 1], [3, 4], [5, 5], [4.5, 2]], dtype=float)


def test_fronts_crowding_selection() -> None:
    fronts = nondominated_fronts(POINTS)
    assert [sorted(f.tolist()) for f in fronts] == [[0, 1, 2], [3, 5], [4]]
    d = crowding_distance(POINTS[[0, 1, 2]])
    # middle point: (4 - 1) / 3 + (5 - 1) / 4 = 2
    assert d[0] == d[2] == np.inf and d[1] == pytest.approx(2.0)
    assert sorted(select_population(POINTS, 4).tolist())[:3] == [0, 1, 2]
    assert len(select_population(POINTS, 4)) == 4
    assert nondominated_fronts(np.zeros((0, 2))) == []


def test_hypervolume_2d() -> None:
    # staircase of (1,5), (2,3), (4,1) under reference (6,6): 5*1 + 4*2 + 2*2 = 17
    assert hypervolume_2d(POINTS[[0, 1, 2]], (6, 6)) == pytest.approx(17.0)
    assert hypervolume_2d(POINTS, (6, 6)) == pytest.approx(17.0)  # dominated points add nothing
    assert hypervolume_2d(np.array([[7.0, 1.0]]), (6, 6)) == 0.0


def test_pareto_front_of_trials_skips_failed_and_incomplete() -> None:
    arch = SPACE.sample(np.random.default_rng(0))
    trials = [Trial(0, arch, {"score": 1.0, "latency_ms": 1.0}), Trial(1, arch, {"score": 2.0, "latency_ms": 3.0}),
              Trial(2, arch, {"score": 1.5, "latency_ms": 5.0}), Trial(3, arch, {"score": 9.0}),
              Trial(4, arch, {}, FAILED, "boom")]
    assert [t.number for t in pareto_front(trials, OBJ)] == [1, 0]
    kept, f = objective_matrix(trials, OBJ)
    assert [t.number for t in kept] == [0, 1, 2] and f[1].tolist() == [-2.0, 3.0]


# ---- objectives -----------------------------------------------------------------------------------
def test_parse_objectives() -> None:
    assert parse_objectives("score:max,latency_ms:min") == OBJ
    assert parse_objectives([["score", True], ["latency_ms", False]]) == OBJ
    assert parse_objectives(["accuracy", "params_m:min"]) == (("accuracy", True), ("params_m", False))
    with pytest.raises(UsageError, match="valid: max, min"):
        parse_objectives("score:up")
    with pytest.raises(UsageError, match="each once"):
        parse_objectives("score,score:min")
    with pytest.raises(UsageError, match="pairs"):
        parse_objectives(3)  # type: ignore[arg-type]


def test_objectives_on_strategies() -> None:
    assert STRATEGIES.get("random")(SPACE).objectives == (("score", True),)
    evo = STRATEGIES.get("evolution")(SPACE, objectives="latency_ms:min")
    assert (evo.metric, evo.maximize) == ("latency_ms", False)
    assert STRATEGIES.get("nsga2")(SPACE).objectives == OBJ
    assert STRATEGIES.get("optuna-nsga2")(SPACE).objectives == OBJ
    assert STRATEGIES.get("nsga2")(SPACE, metric="accuracy").objectives == (("accuracy", True), ("latency_ms", False))


# ---- NSGA-II --------------------------------------------------------------------------------------
def hv(trials: list[Trial]) -> float:
    return hypervolume_2d(objective_matrix(trials, OBJ)[1], (0.0, 250.0))


def test_nsga2_beats_random_hypervolume() -> None:
    ratios = []
    for seed in range(3):
        r = run_search(STRATEGIES.get("random")(SPACE, seed=seed), toy, 120, progress=False)
        n = run_search(STRATEGIES.get("nsga2")(SPACE, seed=seed, population=10), toy, 120, progress=False)
        ratios.append(hv(n) / hv(r))
    assert np.mean(ratios) > 1.05 and min(ratios) > 1.0


def test_nsga2_parents_are_a_function_of_history() -> None:
    strat = STRATEGIES.get("nsga2")(SPACE, seed=2, population=6)
    trials = run_search(strat, toy, 20, progress=False)
    parents = [t.number for t in strat.parents()[0]]
    again = STRATEGIES.get("nsga2")(SPACE, seed=2, population=6)
    again.rebuild(trials)
    assert [t.number for t in again.parents()[0]] == parents and len(parents) == 6
    # the parents are the best of the first 18 trials (3 generations): none of them is dominated there
    _, f = objective_matrix(trials[:18], OBJ)
    first = set(nondominated_fronts(f)[0].tolist())
    assert first <= set(parents) or set(parents) <= first


def test_nsga2_children_respect_constraints() -> None:
    def feasible(a) -> bool:  # type: ignore[no-untyped-def]
        return toy(a)["latency_ms"] <= 115

    trials = run_search(STRATEGIES.get("nsga2")(SPACE, seed=0, population=6, feasible=feasible), toy, 30, progress=False)
    assert all(t.metrics["latency_ms"] <= 115 for t in trials)
    assert len({t.arch for t in trials}) == 30


# ---- Optuna samplers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tpe", "optuna-nsga2"])
def test_optuna_study_replays_history(name: str) -> None:
    strat = STRATEGIES.get(name)(SPACE, seed=0, objectives=OBJ, **({"population": 4} if "nsga2" in name else {}))
    trials = run_search(strat, toy, 12, progress=False)
    fresh = STRATEGIES.get(name)(SPACE, seed=0, objectives=OBJ, **({"population": 4} if "nsga2" in name else {}))
    fresh.rebuild(trials)
    fresh.ask()
    study = fresh._study
    assert study is not None and [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.values for t in done[:12]] == [[t.metrics["score"], t.metrics["latency_ms"]] for t in trials]
    if "nsga2" in name:  # the sampler's generation bookkeeping was replayed as well
        assert {t.system_attrs.get("NSGAIISampler:generation") for t in done[:12]} == {0, 1, 2}


def test_tpe_tells_infeasible_as_pruned_and_stays_feasible() -> None:
    def feasible(a) -> bool:  # type: ignore[no-untyped-def]
        return toy(a)["latency_ms"] <= 125

    strat = STRATEGIES.get("tpe")(SPACE, seed=1, feasible=feasible, n_startup_trials=5)
    trials = run_search(strat, toy, 25, progress=False)
    assert all(t.metrics["latency_ms"] <= 125 for t in trials) and len({t.arch for t in trials}) == 25
    assert strat._study is not None
    assert strat._study.get_trials(states=(optuna.trial.TrialState.PRUNED,))


TOY_VIT = {"resolution": 32, "patch": 4, "num_classes": 10, "widths": [[8, 16], [16, 24], [32]],
           "heads": [[1, 2], [2], [2, 4]], "head_dims": [4, 4, 8], "mlp": [[8, 16], [32], [32, 64]],
           "depths": [[1, 2], [1], [1, 2]]}


def test_invalid_proposals_are_rejected_or_repaired() -> None:
    space = get_space("vit_resnas", **TOY_VIT)  # inactive block slots must hold 0: most raw proposals are invalid
    calls = []

    def score(a):  # type: ignore[no-untyped-def]
        return {"score": float(sum(g for g in a.genes if isinstance(g, int)))}

    trials = run_search(STRATEGIES.get("tpe")(space, seed=0), score, 8, progress=False)
    assert all(space.validate(t.arch) for t in trials)
    if not hasattr(space, "canonicalize"):
        def canonicalize(genes):  # type: ignore[no-untyped-def]
            calls.append(1)
            return space.sample(np.random.default_rng(len(calls)))
        space.canonicalize = canonicalize  # type: ignore[attr-defined]
        strat = STRATEGIES.get("tpe")(space, seed=0)
        trials = run_search(strat, score, 8, progress=False)
        assert calls and all(space.validate(t.arch) for t in trials)
        assert strat._study.get_trials(states=(optuna.trial.TrialState.FAIL,))  # type: ignore[union-attr]
