"""The DARTS space (`nasnet -o variant=darts`) against NAS-Bench-301 ground truth (NASLib's 725 cells).

Reference values: NASLib's `params` score and `val_accuracy` of the 725 cells of zc_nasbench301.json
(NAS-Bench-Suite-Zero) and the published op list of NAS-Bench-301's genotype encoding.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nas.core.errors import NasError, UsageError
from search_spaces import bench_data
from search_spaces.catalog import get_space


def _naslib_params(net: "object") -> int:
    """Parameters as NASLib counts them for its NB301 nets: NASLib builds the cell ops with
    BatchNorm affine=False (no BN weights inside the ops); stem, preprocessing and head keep theirs."""
    import torch.nn as nn
    total = sum(p.numel() for p in net.parameters())   # type: ignore[attr-defined]
    for name, m in net.named_modules():   # type: ignore[attr-defined]
        if isinstance(m, nn.BatchNorm2d) and ".ops." in name:
            total -= sum(p.numel() for p in m.parameters())
    return total


def _params_of(space: "object", block: str) -> int:
    import torch
    with torch.device("meta"):   # shapes only: no weight init
        return _naslib_params(space.build(space.parse(block)))   # type: ignore[attr-defined]


def _check_params(every: int) -> None:
    """Every sep/dil/skip op shows in the parameter count (skip_connect through a reduction cell's
    factorized reduce), so one wrong op index or one input read the wrong way changes it."""
    space = get_space("nasnet", **bench_data.NB301_NET)
    recs = bench_data.nb301_records()
    assert len(recs) == 725
    wrong = {b: (_params_of(space, b), round(r.scores["params"] * 1e6)) for b, r in list(recs.items())[::every]}
    wrong = {b: v for b, v in wrong.items() if v[0] != v[1]}
    assert not wrong, f"{len(wrong)} cells differ, e.g. {next(iter(wrong.items()))}"
    # the product's own count (`nas bench proxies` row params_naslib) is the same
    block, rec = next(iter(recs.items()))
    assert bench_data.nb301_naslib_params(space, space.parse(block)) == round(rec.scores["params"] * 1e6)


def test_params_equal_naslib_sample() -> None:
    _check_params(9)


@pytest.mark.slow
def test_params_equal_naslib_for_all_725_cells() -> None:
    _check_params(1)


def test_another_op_order_breaks_the_params_check() -> None:
    """The check can fail: DARTS' PRIMITIVES order with `none` first (every op index shifted by one)
    gives other counts for most of the first 20 cells."""
    space = get_space("nasnet", **bench_data.NB301_NET)
    raw = bench_data._zc_json(bench_data.NB301_ZC)["cifar10"]
    shifted = ("max3x3", "max3x3", "avg3x3", "id", "sep3x3", "sep5x5", "dil3x3", "dil5x5")  # none -> max
    differ = 0
    for key, rec in list(raw.items())[:20]:
        genes = []
        for cell in ast.literal_eval(key):
            for x, op in cell:
                genes += [x, shifted[op]]
        # regroup (input, op) pairs as blocks (input a, op a, input b, op b)
        arch = space.canonicalize(genes)
        differ += _params_of(space, space.format(arch)) != round(rec["params"]["score"] * 1e6)
    assert differ >= 15


def test_records_are_valid_darts_cells_with_published_accuracy_range() -> None:
    recs = bench_data.nb301_records()
    accs = [r.val_accuracy for r in recs.values()]
    assert min(accs) == pytest.approx(91.24, abs=0.01) and max(accs) == pytest.approx(94.49, abs=0.01)
    space = get_space("nasnet", variant="darts")
    for block in list(recs)[:50]:
        assert space.format(space.parse(block)) == block


def test_bad_nb301_key_is_a_clear_error() -> None:
    with pytest.raises(NasError, match="bad NB301 arch key"):
        bench_data.nb301_key_to_string("[[(0, 9)]]")


def test_tabular_and_candidates_on_nb301() -> None:
    from nas.evaluators.catalog import make_evaluator
    space = get_space("nasnet", variant="darts", candidates="nb301")
    assert space.size() == 725
    ev = make_evaluator("tabular", space)
    recs = bench_data.nb301_records()
    block = next(iter(recs))
    assert ev(space.parse(block))["accuracy"] == recs[block].val_accuracy
    import numpy as np
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    assert space.format(arch) in recs and space.format(space.mutate(arch, rng)) in recs
    with pytest.raises(UsageError, match="nb301"):
        make_evaluator("tabular", get_space("nasnet", variant="darts"))
    with pytest.raises(UsageError, match="variant"):
        get_space("nasnet", candidates="nb301")


def test_darts_arch_outside_nb301_with_tabular_is_one_line_exit_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    space = get_space("nasnet", variant="darts")
    outside = space.format(space.parse("normal: sep3x3(0)+sep3x3(1) sep3x3(0)+sep3x3(1) sep3x3(0)+sep3x3(1) "
                                       "sep3x3(0)+sep3x3(1) || reduce: max3x3(0)+max3x3(1) max3x3(0)+max3x3(1) "
                                       "max3x3(0)+max3x3(1) max3x3(0)+max3x3(1)"))
    assert outside not in bench_data.nb301_records()
    f = tmp_path / "c.txt"
    f.write_text(outside + "\n")
    capsys.readouterr()
    code = main(["search", "--space", "nasnet", "-o", "variant=darts", "--candidates", str(f), "--evaluator",
                 "tabular", "--trials", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2
    assert len(lines) == 1 and "has no nasnet ground truth" in lines[0] and "Traceback" not in err


def test_strategy_benchmark_covers_nb301() -> None:
    """The ground-truth strategy benchmark runs on the NB301 list: the reference enumerates the 725
    cells (best overall = the data's maximum, 94.49%), and a short evolution run stays inside them."""
    from nas.bench.strategies import reference, setup_for
    ref = reference(setup_for("nasnet"))
    best = max(r.val_accuracy for r in bench_data.nb301_records().values())
    assert ref["archs"] == 725 and ref["best_accuracy"] == best
    assert 0 < ref["feasible"] < 725 and ref["best_feasible_accuracy"] <= best


@pytest.mark.slow
def test_strategy_benchmark_runs_on_nb301() -> None:   # ~3 min on a loaded 2-core machine
    from nas.bench.strategies import reference, setup_for, strategy_benchmark
    ref = reference(setup_for("nasnet"))
    out = strategy_benchmark("nasnet", strategies=["evolution"], seeds=2, budgets=(10,), progress=False,
                             curve_points=3)
    assert out["strategies"]["evolution"]["budgets"]["10"]["best_accuracy"]["mean"] <= ref["best_feasible_accuracy"]
