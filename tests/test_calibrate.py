"""`nas latency calibrate` (latency/calibrate.py), `nas latency predict --archs`, `nas bench latency`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from latency.calibrate import FEATURES, FeatureCache, build_table, calibrate, fit_features
from latency.model import LUTModel
from latency.table import LatencyTable
from nas.cli.main import main
from search_spaces.catalog import get_space

#: a made-up device: ms per feature unit (MACs, bytes, ops); conv / fc MACs are fixed in mbconv nets
TRUE = {"macs_conv": 0.0, "macs_pw": 2.0e-8, "macs_dw": 6.0e-8, "macs_fc": 0.0,
        "bytes_compute": 4.0e-7, "bytes_memory": 1.5e-6, "ops": 4.0e-3}
TRUE_C0 = 1.5
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _synthetic(n: int, seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    space = get_space("mbconv")
    rng = np.random.default_rng(seed)
    archs = list({space.sample(rng): None for _ in range(n)})
    x = FeatureCache(space).matrix(archs)
    return archs, x, TRUE_C0 + x @ np.array([TRUE[f] for f in FEATURES])


def test_fit_recovers_known_constants_and_predicts_held_out_archs():
    archs, x, y = _synthetic(12, seed=1)
    fit = fit_features(x, y)
    assert set(fit.fixed) == {"macs_conv", "macs_fc"}        # constant over mbconv nets: left to c0
    for name, w in zip(FEATURES, fit.weights):
        if name not in fit.fixed:
            assert w == pytest.approx(TRUE[name], rel=0.02), name
    assert fit.ridge == 0.0 and fit.cv_error < 1e-3
    # held-out archs: the fixed features' cost is in the intercept, so predictions stay exact
    _, x2, y2 = _synthetic(40, seed=7)
    assert np.max(np.abs(fit.predict(x2) - y2) / y2) < 0.01


def test_table_predicts_what_the_fit_predicts(tmp_path):
    space = get_space("mbconv")
    archs, _, y = _synthetic(12, seed=2)
    fit = calibrate(space, list(zip(archs, y)))
    table = build_table(space, fit, "synthetic device")
    path = table.save(tmp_path / "dev.json")
    model = LUTModel(space, LatencyTable.load(path))
    _, x2, y2 = _synthetic(20, seed=3)
    archs2 = _synthetic(20, seed=3)[0]
    assert model.predict_many(archs2) == pytest.approx(fit.predict(x2), rel=1e-9)
    assert model.predict_many(archs2) == pytest.approx(y2, rel=0.01)
    meta = LatencyTable.load(path).metadata
    assert meta["source"] == "fitted from end-to-end measurements" and meta["cv"]["error"] < 1e-3
    assert meta["constants"]["us_per_op"] == pytest.approx(TRUE["ops"] * 1e3, rel=0.02)


def test_live_graph_drops_dead_edges_and_folds_a_cut_cell():
    space = get_space("nb201")
    dead = space.parse("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|")   # node 2 cut off
    assert len(space.live_layers(dead)) == 0 < len(space.layers(dead))
    half = space.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|nor_conv_3x3~1|none~2|")
    ops = [s.kwargs.get("op") for s in space.live_layers(half) if s.op == "nb201_edge"]
    assert "nor_conv_1x1" not in ops and len(space.layers(half)) - len(space.live_layers(half)) == 15


def test_calibrate_on_ten_measured_archs_ranks_the_others():
    """Fit on 10 random archs of a measured device, Spearman on 3,000 other measured archs. Floors
    from `nas bench latency --repeats 10` (all 15,625 archs, 10 samples of 10): raspi4 mean 0.935,
    worst 0.904; eyeriss 0.997, worst 0.996; MACs alone reach 0.890 / 0.612."""
    from scipy.stats import spearmanr

    from latency.bench_devices import nb201_latency
    from latency.calibrate import GRAPHS, fit_best
    data = nb201_latency()
    space = get_space("nb201")
    blocks = sorted(data.index)
    idx = np.random.default_rng(0).permutation(len(blocks))[:3000 + 10 * 3]
    archs = [space.parse(blocks[i]) for i in idx]
    xs = {g: FeatureCache(space, g).matrix(archs) for g in GRAPHS}
    for device, floor in (("raspi4", 0.86), ("eyeriss", 0.99)):
        y = np.array([data.ms[device][blocks[i]] for i in idx])
        for k in range(3):   # three disjoint samples of 10
            train = slice(3000 + 10 * k, 3000 + 10 * (k + 1))
            fit = fit_best({g: x[train] for g, x in xs.items()}, y[train])
            rho = spearmanr(fit.predict(xs[fit.graph][:3000]), y[:3000])[0]
            assert rho > floor, (device, k, fit.graph, rho)


def _measurements(tmp_path, device="pixel3", n=10, seed=0, extra=""):
    from latency.bench_devices import nb201_latency
    data = nb201_latency()
    blocks = sorted(data.index)
    idx = np.random.default_rng(seed).choice(len(blocks), n, replace=False)
    path = tmp_path / "m.csv"
    path.write_text("arch,ms\n" + "".join(f"{blocks[i]},{data.ms[device][blocks[i]]}\n" for i in idx) + extra)
    return path


def test_cli_calibrate_writes_a_target_and_predict_archs(tmp_path, capsys):
    m = _measurements(tmp_path)
    out = tmp_path / "dev.json"
    assert main(["latency", "calibrate", "--space", "nb201", "--measurements", str(m), "--out", str(out),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["archs"] == 10 and r["cv_error"] < 0.3 and out.exists()
    archs = tmp_path / "archs.txt"
    archs.write_text(f"# two archs\n{NB201}\n\nnb201-best\n")
    assert main(["latency", "predict", "--space", "nb201", "--target", str(out), "--archs", str(archs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["arch"] for r in rows] == [NB201, get_space("nb201").format(get_space("nb201").parse_any("nb201-best"))]
    model = LUTModel(get_space("nb201"), LatencyTable.load(out))
    assert rows[0]["latency_ms"] == pytest.approx(model.predict(get_space("nb201").parse(NB201)))
    # a measured target gives the benchmark's own numbers
    assert main(["latency", "predict", "--space", "nb201", "--target", "pixel3", "--archs", str(archs), "--json"]) == 0
    from latency.bench_devices import nb201_latency
    assert json.loads(capsys.readouterr().out)[0]["latency_ms"] == nb201_latency().ms["pixel3"][NB201]


@pytest.mark.parametrize("extra, text", [
    ("not-an-arch,3.0\n", "line 12"),
    (f"{NB201},-1\n", "'-1' is not a positive"),
    (f"{NB201},abc\n", "'abc'"),
    (f"{NB201},1,2\n", "expected 2 fields"),
    ("64:64:64:64:64,3.0\n", "no nb201 arch"),           # an arch of another space (nats_sss)
])
def test_cli_calibrate_bad_lines(tmp_path, capsys, extra, text):
    m = _measurements(tmp_path, extra=extra)
    out = tmp_path / "sub" / "dev.json"
    assert main(["latency", "calibrate", "--space", "nb201", "--measurements", str(m), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1 and not out.exists() and not out.parent.exists()


def test_cli_calibrate_duplicates_too_few_and_header(tmp_path, capsys):
    out = tmp_path / "dev.json"
    m = _measurements(tmp_path, n=10)
    first = m.read_text().splitlines()[1]
    m.write_text(m.read_text() + first + "\n")
    assert main(["latency", "calibrate", "--space", "nb201", "--measurements", str(m), "--out", str(out)]) == 2
    assert "measured twice (also line 2)" in capsys.readouterr().err
    m = _measurements(tmp_path, n=3)
    assert main(["latency", "calibrate", "--space", "nb201", "--measurements", str(m), "--out", str(out)]) == 2
    assert "holds 3 measured archs; calibration needs at least 5" in capsys.readouterr().err
    m.write_text("block,latency\n")
    assert main(["latency", "calibrate", "--space", "nb201", "--measurements", str(m), "--out", str(out)]) == 2
    assert "header 'arch,ms'" in capsys.readouterr().err and not out.exists()


def test_cli_predict_archs_bad_line(tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text(f"{NB201}\nnope\n")
    assert main(["latency", "predict", "--space", "nb201", "--target", "pixel3", "--archs", str(archs)]) == 2
    assert "line 2: 'nope'" in capsys.readouterr().err


def test_cli_bench_latency_unknown_device(capsys):
    assert main(["bench", "latency", "--devices", "pixel9"]) == 2
    assert "unknown benchmark device 'pixel9'" in capsys.readouterr().err


def test_ten_nets_priced_by_the_pixel1_model_give_back_its_constants(tmp_path, monkeypatch):
    """The pixel1 roofline with one depthwise rate and one bandwidth (its k >= 5 and L2 terms set to
    the 3x3 / DRAM ones) and no depthwise row walk is a special case of the calibrated model: 10
    mbconv nets priced by it give back its constants (latency/devices/pixel1.py) and price 100 other
    nets exactly."""
    from dataclasses import replace

    from latency.devices import primitives
    from latency.devices.pixel1 import CONSTANTS, build_table
    monkeypatch.setattr(primitives, "dw_window_bytes", lambda in_nbytes, k, s: 0)
    from latency.model import LUTModel
    P1 = replace(CONSTANTS, eff_dw_large=CONSTANTS.eff_dw, l2_bandwidth_gbs=CONSTANTS.bandwidth_gbs)
    space = get_space("mbconv")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(110)]
    y = LUTModel(space, build_table(space, P1)).predict_many(archs)
    fit = calibrate(space, list(zip(archs[:10], y[:10])))
    c = fit.constants()
    assert c["ms_per_gmac_pw"] == pytest.approx(1e3 / (P1.peak_gmacs * P1.eff_pw), rel=1e-3)
    assert c["ms_per_gmac_dw"] == pytest.approx(1e3 / (P1.peak_gmacs * P1.eff_dw), rel=1e-3)
    assert c["ms_per_mb_compute"] == pytest.approx(1.0 / P1.bandwidth_gbs, rel=1e-3)
    assert c["us_per_op"] == pytest.approx(P1.overhead_us, rel=1e-3)
    x = FeatureCache(space).matrix(archs[10:])
    assert fit.predict(x) == pytest.approx(y[10:], rel=1e-6)
