"""Every registered space x every strategy family, end to end on synthetic data.

A family is a list of strategies; a (space, family) pair runs the first strategy of the family that
declares it supports the space (`Strategy.supports`). Each pair runs a tiny search (tiny space
options, a pixel1-model table for them, 1 epoch, a few trials) through `nas.search` and checks what
the search returns: a valid arch of the space, its predicted latency equal to the table's, within the
bound when there is one. A pair no strategy of its family supports must be refused with a UsageError
that names the spaces the strategies do search; `UNSUPPORTED` lists those pairs today, so a new space
or strategy shows at once which pairs it adds or breaks.

`run_pair` is reused by ``benchmarks/matrix.py`` (the timing table of the closing note).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from nas.core.errors import UsageError
from nas.strategies.catalog import STRATEGIES
from search_spaces.catalog import SPACES, get_space

FAMILIES: dict[str, tuple[str, ...]] = {
    "differentiable": ("single-path", "darts", "differentiable"),
    "one-shot": ("supernet",),
    "evolutionary": ("evolution",),
    "training-free": ("zero-cost",),
}

#: tiny options of every registered space (two entries for nasnet's variants)
SPACE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "mbconv": ("mbconv", {"resolution": 32, "width_mult": 0.25}),
    "nasnet": ("nasnet", {"channels": 4, "cells": 1, "resolution": 16}),
    "nasnet-darts": ("nasnet", {"variant": "darts", "channels": 4, "cells": 1, "resolution": 16}),
    "hytra": ("hytra", {"resolution": 32, "width": 8, "depth": 4, "head_dim": 8, "min_scales": [0, 1, 2, 3]}),
    "vit_resnas": ("vit_resnas", {"resolution": 16, "patch": 4, "stem": "conv", "widths": [[8, 16], [16, 24]],
                                  "heads": [[1, 2], [1, 2]], "head_dims": [8, 8], "mlp": [[16, 32], [32, 48]],
                                  "depths": [[1, 2], [1, 2]]}),
    "nb201": ("nb201", {"candidates": "naslib"}),   # the archs with ground truth
    "nats_sss": ("nats_sss", {}),
    "ofa_mbv3": ("ofa_mbv3", {"resolution": 32, "num_classes": 10}),
}
#: the ground-truth benchmark spaces: scored by their tables (evaluator `tabular`)
BENCHMARK_SPACES = {"nb201", "nats_sss"}

#: (space case, family) pairs no strategy of the family searches yet (must be a clear UsageError): none
#: since nb201 and nats_sss have supernets (nas/supernet/sliced.py)
UNSUPPORTED: set[tuple[str, str]] = set()
#: (space case, strategy) pairs a strategy refuses while others of its family search the space
REFUSED = {("nb201", "single-path"), ("nats_sss", "darts"), ("ofa_mbv3", "single-path")}
#: pairs that take longer than the default suite allows (measured on the 2-core CI machine)
SLOW = {("mbconv", "one-shot"), ("nasnet", "one-shot"), ("mbconv", "differentiable"), ("nasnet", "differentiable"),
        ("nasnet-darts", "differentiable"), ("ofa_mbv3", "one-shot"), ("ofa_mbv3", "differentiable"),
        ("nb201", "one-shot"), ("nats_sss", "one-shot"), ("nb201", "differentiable"), ("nats_sss", "differentiable")}
#: options every training-based strategy gets (tiny: one epoch on 48 synthetic images)
TRAINING = {"dataset": "synthetic:48", "epochs": 1, "batch_size": 16}
STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {
    "single-path": {"width_mult": 0.25, "calib_batches": 1},
    "darts": {"channels": 4, "resolution": 16, "retrain_epochs": 1},
    "differentiable": {"calib_batches": 1, "channels": 4},
    "supernet": {"random_paths": 1, "calib_batches": 1, "population": 3, "sample_size": 2, "channels": 4},
    "evolution": {"population": 4, "sample_size": 2},
    "zero-cost": {"pool": 4, "population": 3, "sample_size": 2, "proxy_resolution": 16, "proxy_batch": 4},
}


def strategy_for(case: str, family: str) -> str | None:
    """The first strategy of `family` that searches the space of `case`; None when none does."""
    name, opts = SPACE_CASES[case]
    space = get_space(name, **opts)
    return next((s for s in FAMILIES[family] if STRATEGIES.get(s).supports(space)), None)


def run_pair(case: str, family: str, out: Path, *, dataset: str | None = None, trials: int = 3,
             bound_factor: float | None = None, bound_ms: float | None = None,
             strategy: str | None = None) -> dict[str, Any]:
    """Run the tiny search of one (space case, family) pair into `out`; returns its summary plus
    `seconds` (wall time) and `strategy`. `bound_factor`: a latency bound of that factor times the
    median latency of 20 seeded samples; `bound_ms`: that bound (neither: unbounded); `strategy`:
    this member of the family instead of the first that supports the space."""
    import numpy as np

    from latency.devices.pixel1 import build_table
    from latency.model import LUTModel
    from latency.table import LatencyTable
    from nas import SearchConfig, search
    name, opts = SPACE_CASES[case]
    strategy = strategy or strategy_for(case, family)
    if strategy is None:
        raise UsageError(f"no {family} strategy searches {case}")
    listed = "candidates" in opts and not STRATEGIES.get(strategy).follows_candidates
    if listed:   # it cannot keep to a candidate list (refused in one line): the whole space, scored by a proxy
        opts = {k: v for k, v in opts.items() if k != "candidates"}
    space = get_space(name, **opts)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(space).save(out / f"{case}-pixel1.json")
    bounds: tuple[float, ...] = ()
    if bound_factor is not None:
        model = LUTModel(space, LatencyTable.load(table))
        rng = np.random.default_rng(0)
        bounds = (float(np.median([model.predict(space.sample(rng)) for _ in range(20)])) * bound_factor,)
    if bound_ms is not None:
        bounds = (float(bound_ms),)
    weight_sharing = STRATEGIES.get(strategy).weight_sharing
    evaluator, ev_opts = ("tabular", {"dataset": "cifar10"}) if name in BENCHMARK_SPACES and not listed else ("zero-cost", {})
    strat_opts = dict(STRATEGY_OPTIONS[strategy])
    if strategy == "zero-cost" and dataset:
        strat_opts["dataset"] = dataset
    cfg = SearchConfig(space=name, space_options=opts, targets=(str(table),),
                       latency_ms=bounds, strategy=strategy, strategy_options=strat_opts, evaluator=evaluator,
                       evaluator_options=ev_opts, trials=trials, seed=0, out=str(out / "run"),
                       dataset=(dataset or TRAINING["dataset"]) if weight_sharing else dataset,
                       epochs=TRAINING["epochs"] if weight_sharing else None,
                       batch_size=TRAINING["batch_size"] if weight_sharing else None)
    t0 = time.perf_counter()
    result = search(cfg, progress=False)
    summary = dict(result.summary)
    summary.update(seconds_wall=time.perf_counter() - t0, strategy=strategy, table=str(table), bounds=bounds,
                   space_options=opts)
    return summary


def _pairs(kind: str) -> list[Any]:
    out = []
    for case in SPACE_CASES:
        for family in FAMILIES:
            if ((case, family) in UNSUPPORTED) != (kind == "unsupported"):
                continue
            marks = [pytest.mark.slow] if (case, family) in SLOW and kind == "run" else []
            out.append(pytest.param(case, family, marks=marks, id=f"{case}-{family}"))
    return out


@pytest.mark.parametrize("case, family", _pairs("run"))
def test_pair_runs_end_to_end(case: str, family: str, tmp_path: Path) -> None:
    s = run_pair(case, family, tmp_path)
    space = get_space(SPACE_CASES[case][0], **s["space_options"])
    arch = space.parse(s["arch"])                     # a valid arch of the searched space
    from latency.model import LUTModel
    from latency.table import LatencyTable
    expected = LUTModel(space, LatencyTable.load(s["table"])).predict(arch)
    assert math.isclose(s["latency_ms"], expected, rel_tol=1e-9)   # the table's prediction of that arch
    assert s["strategy"] in FAMILIES[family] and s["failed_trials"] == 0
    assert 1 <= s["trials"] <= 3 and math.isfinite(s["metrics"]["score"])


@pytest.mark.parametrize("case, strategy", sorted(REFUSED))
def test_unsupported_pair_is_a_usage_error_naming_the_supported_spaces(case: str, strategy: str,
                                                                       tmp_path: Path) -> None:
    from nas import SearchConfig, search
    name, opts = SPACE_CASES[case]
    assert not _pairs("unsupported")   # every family searches every space today (UNSUPPORTED is empty)
    for strategy in [strategy]:
        cls = STRATEGIES.get(strategy)
        cfg = SearchConfig(space=name, space_options=opts, strategy=strategy, trials=1, out=str(tmp_path / strategy))
        with pytest.raises(UsageError, match=f"strategy '{strategy}' cannot search space '{name}'") as err:
            search(cfg, progress=False)
        supported = cls.supported_spaces()
        assert supported and all(s in str(err.value) for s in supported)
        assert str(err.value).count("\n") == 0 and not (tmp_path / strategy).exists()   # nothing written


def test_every_registered_space_and_strategy_is_in_the_matrix() -> None:
    covered = {name for name, _ in SPACE_CASES.values()}
    assert covered == set(SPACES.names())
    families = {s for members in FAMILIES.values() for s in members}
    # the other registered strategies are ask/tell searches of the evolutionary kind (random, nsga2,
    # tpe, optuna-nsga2): they run on every space through the same pipeline as `evolution`; `exact`
    # solves only the separable spaces and says so
    assert families <= set(STRATEGIES.names())
    for name in set(STRATEGIES.names()) - families - {"exact"}:
        assert STRATEGIES.get(name).supported_spaces() is None and not STRATEGIES.get(name).weight_sharing
    assert STRATEGIES.get("exact").supported_spaces() == ("mbconv", "nb201", "ofa_mbv3")


def test_list_strategies_says_which_spaces_each_searches() -> None:
    from nas.api import list_catalogue
    rows = {r["name"]: r["spaces"] for r in list_catalogue("strategies")}
    assert rows["darts"] == "nasnet with variant=darts (-o variant=darts)"
    assert rows["single-path"] == "mbconv" and rows["evolution"] == "every space"
    assert rows["supernet"] == "hytra, mbconv, nasnet, nats_sss, nb201, ofa_mbv3, vit_resnas"
