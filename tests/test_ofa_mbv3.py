"""The ofa_mbv3 space against OFA's own counts (DyNAS-T's params / MACs columns), its Pixel 1 table,
and the `predictor` evaluator (held-out quality, training-range refusals)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from nas.cli.main import main
from nas.core.errors import ArchError, UsageError
from search_spaces.catalog import get_space
from search_spaces.ofa_data import ofa_rows
from search_spaces.op_params import arch_size


@pytest.fixture(scope="module")
def space():  # type: ignore[no-untyped-def]
    return get_space("ofa_mbv3")


def test_params_and_macs_equal_ofa_for_every_row(space) -> None:  # type: ignore[no-untyped-def]
    """Every one of the 2,373 rows: our layer specs count exactly DyNAS-T's params and MACs of OFA's
    extracted sub-network (a wrong stage width, SE width, expansion rounding or head would not)."""
    rows = ofa_rows()
    assert len(rows) == 2373
    bad = []
    for row in rows:
        params, macs = arch_size(space, space.from_ofa(row.ks, row.e, row.d))
        if (params, macs) != (row.params, row.macs):
            bad.append((row, params, macs))
    assert not bad, f"{len(bad)} rows differ, e.g. {bad[0]}"


def test_built_torch_net_has_ofa_params(space) -> None:  # type: ignore[no-untyped-def]
    rows = ofa_rows()
    for row in (rows[0], max(rows, key=lambda r: r.params)):
        net = space.build(space.from_ofa(row.ks, row.e, row.d))
        assert sum(p.numel() for p in net.parameters()) == row.params
        with torch.no_grad():
            assert net.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_ofa_encoding_round_trip_and_dont_care_slots(space) -> None:  # type: ignore[no-untyped-def]
    rows = ofa_rows()
    archs = {space.from_ofa(r.ks, r.e, r.d) for r in rows}
    assert len(archs) == 2162   # 2,223 distinct rows as written; slots past a stage's depth do not matter
    row = rows[0]
    arch = space.from_ofa(row.ks, row.e, row.d)
    ks, e, d = space.to_ofa(arch)
    assert tuple(d) == row.d and space.from_ofa(ks, e, d) == arch
    active = [j < row.d[i // 4] for i, j in ((i, i % 4) for i in range(20))]
    assert [k for k, a in zip(ks, active) if a] == [k for k, a in zip(row.ks, active) if a]
    changed = list(row.ks)
    changed[19 if row.d[4] < 4 else 0] = 7 if changed[19 if row.d[4] < 4 else 0] != 7 else 3
    assert (space.from_ofa(changed, row.e, row.d) == arch) == (row.d[4] < 4)
    with pytest.raises(ArchError, match="depth"):
        space.from_ofa(row.ks, row.e, (1, 2, 3, 4, 4))
    # a skip between blocks: the same net (slots 2 and 3 share their shapes), one canonical form
    rest = " | " + " | ".join(["k3e3 k3e3 skip skip"] * 4)
    mid, end = space.parse("k3e3 k3e3 skip k5e4" + rest), space.parse("k3e3 k3e3 k5e4 skip" + rest)
    assert [s.key for s in space.layers(mid)] == [s.key for s in space.layers(end)]
    assert space.canonical(mid) == end and space.to_ofa(mid) == space.to_ofa(end)
    with pytest.raises(ArchError, match="at least 2 blocks"):
        space.parse("k3e3 skip skip skip" + rest)


def test_pixel1_table_covers_the_space_and_equals_the_model(space) -> None:  # type: ignore[no-untyped-def]
    from latency.devices import pixel1 as P
    from latency.devices.pixel1_ops import TRUST
    from latency.model import LUTModel
    from latency.targets import load_table
    table = load_table("pixel1", "ofa_mbv3")
    assert set(table.entries) == {s.key for s in space.all_layers()}
    assert table.metadata["constants"] == P.asdict(P.CONSTANTS) and table.metadata["trust"] == TRUST["ofa_mbv3"]
    model = LUTModel(space, table)
    lo, hi = (space.parse(space.presets[p]) for p in ("ofa-min", "ofa-max"))
    for arch in (lo, hi, space.sample(np.random.default_rng(3))):
        assert model.predict(arch) == pytest.approx(P.net_ms(space.layers(arch)), rel=1e-9)
    assert model.predict(lo) < model.predict(hi)


# ---- predictor -----------------------------------------------------------------------------------
def test_predictor_held_out_beats_macs_at_fixed_latency(space) -> None:  # type: ignore[no-untyped-def]
    """One random 80/20 split: the held-out Spearman of the predictor is high overall and, within the
    middle half of Pixel 1 latencies, far above the MACs-only baseline (0.6 in benchmarks/ofa_predictor.py)."""
    from latency.targets import lut_model
    from nas.evaluators.predictor import features, fit_model, macs_baseline, samples
    data = samples()
    order = np.random.default_rng(0).permutation(len(data))
    test, train = [data[i] for i in order[:400]], [data[i] for i in order[400:]]
    y = np.array([s.top1 for s in test])
    pred = fit_model(space, train, "ridge").predict(np.stack([features(space, s.arch, "ridge") for s in test]))
    base = macs_baseline(train).predict([s.macs for s in test])
    assert spearmanr(y, pred).statistic > 0.98 and np.mean(np.abs(y - pred)) < 0.15
    lat = np.array([lut_model("pixel1", space).predict(s.arch) for s in test])
    mid = (lat > np.quantile(lat, 0.25)) & (lat < np.quantile(lat, 0.75))
    assert spearmanr(y[mid], pred[mid]).statistic > spearmanr(y[mid], base[mid]).statistic + 0.2


def test_predictor_evaluator_and_its_refusals(space) -> None:  # type: ignore[no-untyped-def]
    from nas.evaluators.catalog import make_evaluator
    ev = make_evaluator("predictor", space)
    row = max((r for r in ofa_rows() if 3 in r.d), key=lambda r: r.top1)   # a stage of depth 3: see below
    arch = space.from_ofa(row.ks, row.e, row.d)
    out = ev(arch)
    assert abs(out["accuracy"] - row.top1) < 0.3 and out["macs_m"] == row.macs / 1e6
    genes = list(arch.genes)
    stage = next(i for i in range(5) if genes[4 * i + 2] != "skip" and genes[4 * i + 3] == "skip")
    genes[4 * stage + 2], genes[4 * stage + 3] = "skip", genes[4 * stage + 2]
    assert ev(space.make(genes)) == out             # the same net written with a skip between blocks
    with pytest.raises(UsageError, match="outside the predictor's training range"):
        ev(space.parse(space.presets["ofa-min"]))      # 121.3M MACs, below every measured arch
    with pytest.raises(UsageError, match="resolution=192 is outside"):
        make_evaluator("predictor", get_space("ofa_mbv3", resolution=192))
    with pytest.raises(UsageError, match="'ofa_mbv3' only, not 'mbconv'"):
        make_evaluator("predictor", get_space("mbconv"))


def test_cli_refuses_another_space_resolution_and_out_of_range_candidates(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from latency.devices.pixel1 import build_table
    table = tmp_path / "p1_192.json"
    build_table(get_space("ofa_mbv3", resolution=192)).save(str(table))
    listed = tmp_path / "candidates.txt"   # ofa-min (121.3M MACs, below the data) and a larger arch
    listed.write_text(" | ".join(["k3e3 k3e3 skip skip"] * 5) + "\n"
                      + " | ".join(["k3e3 k3e3 skip skip"] * 4 + ["k7e6 k7e6 skip skip"]) + "\n")
    for argv, needle in ((["--space", "nb201"], "'ofa_mbv3' only"),
                         (["--space", "ofa_mbv3", "-o", "resolution=192", "--target", str(table)], "resolution=192"),
                         (["--space", "ofa_mbv3", "--candidates", str(listed)], "121.3M MACs, outside")):
        code = main(["search", *argv, "--evaluator", "predictor", "--trials", "2", "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "run").exists()


def test_loose_bound_search_keeps_to_the_predictor_range(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """pixel1 160 ms admits archs above the rows' MACs (ofa-max: 168 ms); with evolution's default fill=1
    every child used to grow past them and every trial failed (exit 1). The predictor's declared range
    is now a constraint, so repair and fill stay inside it."""
    import json
    out = tmp_path / "run"
    code = main(["search", "--space", "ofa_mbv3", "--target", "pixel1", "--latency-ms", "160", "--evaluator",
                 "predictor", "--out", str(out)])
    capsys.readouterr()
    assert code == 0
    best = json.loads((out / "best.json").read_text())
    rows = {r["constraint"]: r for r in best["budget"]["constraints"]}
    assert set(rows) == {"macs_m<=506.48", "latency_ms[pixel1]<=160"}, rows
    assert all(r["ok"] for r in rows.values()) and rows["macs_m<=506.48"]["slack"] < 10   # on the range's edge
    # a --constraint on the same metric: the tighter of the two is kept
    code = main(["search", "--space", "ofa_mbv3", "--target", "pixel1", "--latency-ms", "160", "--evaluator",
                 "predictor", "--constraint", "macs_m<=900", "--trials", "12", "--out", str(tmp_path / "r2")])
    capsys.readouterr()
    assert code == 0
    best = json.loads((tmp_path / "r2" / "best.json").read_text())
    assert [r["constraint"] for r in best["budget"]["constraints"]][0] == "macs_m<=506.48"


def test_an_evaluators_valid_bounds_become_constraints(space) -> None:  # type: ignore[no-untyped-def]
    """make_budget adds an evaluator's declared bound, or tightens a --constraint on the same metric; the
    evolution repair tables then hold it (the loose-bound search above relies on this)."""
    from nas.evaluators.base import valid_bounds
    from nas.strategies.constraints import make_budget

    class Declares:
        valid_bounds = {"macs_m": 300.0}

    assert valid_bounds(Declares()) == {"macs_m": 300.0} and valid_bounds(object()) == {}
    implied = valid_bounds(Declares())
    for texts, kept in (((), 300.0), (("macs_m<=900",), 300.0), (("macs_m<=250",), 250.0)):
        budget = make_budget(space, texts, {}, {}, lambda t: None, implied)
        assert [(b.metric, b.value) for b in budget.bounds] == [("macs_m", kept)]
    budget = make_budget(space, (), {}, {}, lambda t: None, implied)
    assert not budget.feasible(space.parse(space.presets["ofa-max"])) and budget.tables() is not None
    with pytest.raises(ValueError, match="latency_ms"):
        make_budget(space, (), {}, {}, lambda t: None, {"latency_ms": 5.0})
