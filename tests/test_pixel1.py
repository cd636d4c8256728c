"""The Pixel 1 device model: shipped table, calibration, reference nets, extension point, CLI."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from latency.devices import pixel1 as P
from latency.devices import primitives as M
from latency.devices import pixel1_calibration as C
from latency.devices import pixel1_sources as S
from search_spaces import reference_nets as R
from latency.model import LUTModel
from latency.table import LatencyTable
from latency.targets import load_table, table_path
from nas.core.errors import LatencyError
from nas.core.layer import LayerSpec
from search_spaces.catalog import get_space
from search_spaces.ops import layer_macs

#: documented bounds (PIXEL1.md): in-sample whole-net sources within 7% MAPE, NASNet-A within 15%
FIT_TOL = 7.0


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return load_table("pixel1", "mbconv")


@pytest.fixture(scope="module")
def report() -> dict:
    return C.report()


def test_shipped_table_covers_exactly_the_mbconv_layers(table: LatencyTable) -> None:
    space = get_space("mbconv")
    table.check_space(space.name, space.options())
    assert set(table.entries) == {s.key for s in space.all_layers()}
    assert table_path("pixel1", "mbconv").name == "mbconv.json"


def test_shipped_table_is_what_the_module_computes_now(table: LatencyTable) -> None:
    space = get_space("mbconv")
    for spec in space.all_layers():
        assert table.ms(spec.key) == pytest.approx(P.layer_ms(spec), rel=1e-9), spec.key
    m = table.metadata
    assert m["device"] == P.DEVICE and m["source"] == "model" and m["call_overhead_ms"] == 0.0
    assert "not measured" in m["model"]
    assert m["constants"] == asdict(P.CONSTANTS)
    assert m["fitted"] == list(P.FIT_NAMES) and m["references"]


def test_metadata_records_the_current_checks(table: LatencyTable, report: dict) -> None:
    """The shipped table's fit errors, LOSO table, cell check and arch check are today's, recomputed."""
    for key in ("sources", "fit", "cell_held_out", "spnas_archs", "loso"):
        assert table.metadata[key] == report[key], key


def _doc_loso() -> dict[str, tuple[float, float, float]]:
    """The leave-one-source-out table of PIXEL1.md: source -> (MAPE, bias, within +-10%)."""
    import re
    text = (Path(P.__file__).parent / "PIXEL1.md").read_text()
    block = text.split("<!-- LOSO -->")[1]
    rows = re.findall(r"^\| `(\w+)` \| [\w ]+ \| \d+ \| ([\d.]+)% \| ([+\-\u2212][\d.]+)% \| ([\d.]+)% \|", block, re.M)
    return {r[0]: (float(r[1]), float(r[2].replace("\u2212", "-")), float(r[3])) for r in rows}


def test_loso_recomputed_equals_the_documented_table(report: dict) -> None:
    """Refit on all sources but one, for every source: the errors equal PIXEL1.md's table and metadata."""
    rows = C.loso()
    assert rows == report["loso"]["rows"]
    doc = _doc_loso()
    assert set(doc) == set(S.source_ids()) == {r["source"] for r in rows}
    for r in rows:
        assert doc[r["source"]] == pytest.approx((r["mape_pct"], r["bias_pct"], r["within_10_pct"]), abs=0.051), r


#: sources whose left-out error misses the aim (MAPE <= 7%, |bias| <= 5%), with the documented MAPE
#: ceiling the model must not exceed (PIXEL1.md explains each miss); every other source must meet the aim
KNOWN_MISSES = {"mbv3_session": 21.0, "proxyless_per_op": 12.0}


def test_loso_meets_the_aim_or_the_miss_is_documented(report: dict) -> None:
    for r in report["loso"]["rows"]:
        meets = r["mape_pct"] <= C.AIM_MAPE and abs(r["bias_pct"]) <= C.AIM_BIAS
        assert r["meets_aim"] == meets
        if r["source"] in KNOWN_MISSES:
            assert not meets and r["mape_pct"] <= KNOWN_MISSES[r["source"]], r
        else:
            assert meets, r


def test_in_sample_fit_is_within_documented_error(report: dict) -> None:
    rows = {r["source"]: r for r in report["fit"]["errors"]}
    for sid in ("mbv2_mnas_papers", "nas_papers", "mnasnet_readme", "slim_mbv2"):
        assert rows[sid]["mape_pct"] <= FIT_TOL, rows[sid]
    arch = report["spnas_archs"]   # random mbconv archs vs Single-Path NAS's measured LUT summed
    assert arch["n"] == 500 and arch["max_abs_pct"] <= 5.0 and arch["spearman"] >= 0.98


def test_lut_model_predicts_single_path_nas(table: LatencyTable) -> None:
    space = get_space("mbconv")
    arch = space.parse(R.SINGLE_PATH_NAS_BLOCKS)
    assert [s.key for s in space.layers(arch)] == [s.key for s in R.single_path_nas()]
    pred = LUTModel(space, table).predict(arch)
    assert pred == pytest.approx(P.net_ms(R.single_path_nas()), rel=1e-9)
    assert abs(pred / 79.48 - 1) * 100 <= FIT_TOL


def test_fit_reproduces_the_written_constants() -> None:
    fitted = C.fit()
    assert {k: getattr(fitted, k) for k in P.FIT_NAMES} == P.FITTED
    c = P.CONSTANTS  # physically plausible: fractions of the nominal peak; L2 faster than DRAM, below LPDDR4 peak
    assert 0 < c.eff_dw < c.eff_pw <= 1.0 and 0 < c.eff_dw_large <= 1.0
    assert 1.0 < c.bandwidth_gbs < c.l2_bandwidth_gbs < 29.8 * 4 and c.bandwidth_gbs < 29.8
    assert 0.5 < c.overhead_us < 20


def test_features_price_exactly_what_the_model_prices() -> None:
    """The fit's linear features reproduce primitive_ms for every whole-net point (no drift)."""
    import numpy as np
    src = next(s for s in S.sources() if s.id == "mbv3_session")
    x = np.array([p.features for p in src.points])
    specs = R.mobilenet_v3("small", 0.75)
    assert x[3] @ S.theta(P.CONSTANTS) == pytest.approx(P.net_ms(specs), rel=1e-12)


@pytest.mark.parametrize("net, params", [
    (R.mobilenet_v2, 3_504_872),       # torchvision mobilenet_v2
    (R.proxyless_mobile, 4_080_512),   # pytorchcv proxylessnas_mobile
    (R.proxyless_mobile_14, 6_857_568),  # pytorchcv proxylessnas_mobile14
    (R.single_path_nas, 4_421_616),    # pytorchcv spnasnet
])
def test_reference_nets_match_released_definitions(net, params: int) -> None:
    from search_spaces.ops import build_layer
    specs = net()
    assert sum(p.numel() for s in specs for p in build_layer(s).parameters()) == params


def _net_points() -> list[dict]:
    import json
    return [p for s in json.loads(S.DATA.read_text())["sources"] if s["kind"] == "whole_net" for p in s["points"]]


@pytest.mark.parametrize("point", _net_points(), ids=lambda p: p["name"])
def test_published_nets_chain_their_shapes(point: dict) -> None:
    specs = R.build_net(point["net"], **point["args"])
    for a, b in zip(specs, specs[1:]):
        assert a.output_shape == b.input_shape, (a.key, b.key)
    assert specs[-1].output_shape in ((1000,), (1001,))


@pytest.mark.parametrize("args, macs_m", [
    ({}, 300), ({"width": 1.4}, 585), ({"width": 0.35}, 59)])   # MobileNetV2 paper / slim README
def test_mobilenet_v2_macs(args: dict, macs_m: float) -> None:
    assert sum(layer_macs(s) for s in R.mobilenet_v2(**args)) / 1e6 == pytest.approx(macs_m, rel=0.03)


@pytest.mark.parametrize("args, macs_m", [   # slim README MACs (M) of the float checkpoints
    ({"size": "large"}, 217), ({"size": "large", "width": 0.75}, 155), ({"size": "large", "minimalistic": True}, 209),
    ({"size": "small", "width": 0.75}, 44)])
def test_mobilenet_v3_macs_match_published(args: dict, macs_m: float) -> None:
    prims = [p for s in R.mobilenet_v3(**args) for p in M.decompose(s)]
    assert sum(p.macs for p in prims if p.kind in ("conv", "pw", "dw", "fc")) / 1e6 == pytest.approx(macs_m, rel=0.015)


def test_activations_and_se_cost_time() -> None:
    """h-swish, the SE block and 5x5 kernels each add time to a MobileNetV3 net (minimalistic has none)."""
    full, mini = P.net_ms(R.mobilenet_v3("large")), P.net_ms(R.mobilenet_v3("large", minimalistic=True))
    assert full > mini
    relu = LayerSpec.make("ir_block", {"cin": 40, "mid": 120, "cout": 40, "k": 5, "s": 1, "se_ch": 0, "act": "relu"},
                          (40, 28, 28), (40, 28, 28))
    hs = LayerSpec.make("ir_block", {**relu.kwargs, "act": "hswish"}, relu.input_shape, relu.output_shape)
    se = LayerSpec.make("ir_block", {**relu.kwargs, "se_ch": 32}, relu.input_shape, relu.output_shape)
    assert P.layer_ms(relu) < P.layer_ms(hs) and P.layer_ms(relu) < P.layer_ms(se)


def test_data_file_sources_are_cited_and_complete() -> None:
    """Every source says what it is, how many points it has and where they come from; ids are unique."""
    import json
    data = json.loads(S.DATA.read_text())["sources"]
    assert [s["id"] for s in data] == S.source_ids() and len(set(S.source_ids())) == len(data) == 7
    assert {s["kind"] for s in data} == {"whole_net", "per_layer", "per_op"}
    for src in data:
        assert src["citation"] and src["what"] and src["points"]
        assert all(float(p["ms"]) > 0 for p in src["points"])
    assert sum(len(s["points"]) for s in data) == 198


def test_unknown_reference_net_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown reference net 'mobilenet_v9'; valid: .*mobilenet_v3"):
        R.build_net("mobilenet_v9")
    with pytest.raises(ValueError, match="valid: large, small"):
        R.mobilenet_v3("medium")


def test_cli_loso_prints_every_source(capsys) -> None:
    assert C.main(["loso"]) == 0
    out = capsys.readouterr().out
    assert all(sid in out for sid in S.source_ids())


def test_session_levels_put_the_mobilenet_v3_session_apart(report: dict) -> None:
    """The MobileNetV3 authors' session measured MobileNetV2 1.0 at 64 ms (73.8-75 ms in the other sessions):
    the fit gives that session a level of its own (about -12%) and keeps the others within 3% of 0; left
    out, its V3 nets are > 15% off at level 0 but within 10% (mean) once its speed is set by the four nets
    it shares with the other sources, which no other session measured the V3 nets against."""
    levels = report["fit"]["session_levels_pct"]
    assert set(levels) == set(S.source_ids())
    assert -16.0 < levels["mbv3_session"] < -9.0
    assert all(abs(v) < 3.0 for k, v in levels.items() if k != "mbv3_session"), levels
    v3 = next(r for r in report["loso"]["rows"] if r["source"] == "mbv3_session")
    assert v3["mape_pct"] > 15.0 and v3["anchored"]["anchors"] == 4 and v3["anchored"]["n"] == 6
    assert v3["anchored"]["mape_pct"] < 10.0
    assert next(r for r in report["loso"]["rows"] if r["source"] == "spnas_lut")["anchored"] is None


def test_without_session_levels_the_fit_is_pulled_towards_the_fast_session() -> None:
    """A prior too stiff for any level (weight 1e4) is the plain pooled fit: the older sessions' whole
    nets then come out lower than with levels (mbv2_mnas_papers: in-sample bias at least 1 point lower)."""
    stiff, levels = C.fit_sessions(weight=1e4)
    assert all(abs(v) < 0.5 for v in levels.values()), levels
    mbv2 = next(s for s in S.sources() if s.id == "mbv2_mnas_papers")
    assert C.source_stats(mbv2, stiff)["bias_pct"] < C.source_stats(mbv2, P.CONSTANTS)["bias_pct"] - 1.0


def test_cli_loso_session_prior_options(capsys) -> None:
    assert C.main(["loso", "--session-spread", "0.01", "--session-weight", "3"]) == 0
    assert "session prior spread 0.01 weight 3.0" in capsys.readouterr().out
    assert C.main(["loso", "--session-weight", "0"]) == 2
    assert "--session-spread and --session-weight must be positive numbers (got 0.03, 0.0)" in capsys.readouterr().err
    assert C.main(["loso", "--markdown", "--session-spread", "0.1"]) == 2
    assert "drop --session-spread" in capsys.readouterr().err


def test_dense_convs_carry_their_im2col_buffer() -> None:
    """A dense conv with k > 1 moves its im2col buffer (written, then read by the GEMM): 1.35 MB each way
    for the 3-channel stem at 224 px. With it the model prices ProxylessNAS's measured stem node
    (3.246 ms, TFLite per-op profile) within 10% in-sample; without it the node was -25%."""
    import numpy as np
    stem = M.conv2d(3, 32, 3, 2, 224, 224)
    assert stem.kind == "conv" and stem.nbytes == 4 * (3 * 224 * 224 + 32 * 112 * 112 + 32 * 27) + 2 * 4 * 112 * 112 * 27
    assert M.conv2d(32, 64, 1, 1, 56, 56).nbytes == 4 * (32 * 56 * 56 + 64 * 56 * 56 + 64 * 32)   # 1x1: no buffer
    dw = M.conv2d(32, 32, 3, 1, 56, 56, groups=32)
    assert dw.kind == "dw" and dw.nbytes == 4 * (2 * 32 * 56 * 56 + 32 * 9)                     # depthwise: none
    node = next(s for s in S.sources() if s.id == "proxyless_per_op").points[0]
    assert node.name == "op 0 (conv)"
    assert abs(np.array(node.features) @ S.theta(P.CONSTANTS) / node.measured_ms - 1.0) < 0.10


def test_dwsep_op_builds_with_the_spec_shape() -> None:
    import torch

    from search_spaces.ops import build_layer
    from search_spaces.ops_extra import dwsep_spec
    spec = dwsep_spec(8, 16, 3, 2, (9, 9))
    y = build_layer(spec).eval()(torch.zeros(1, *spec.input_shape))
    assert tuple(y.shape[1:]) == spec.output_shape == (16, 5, 5)
    assert layer_macs(spec) == 5 * 5 * 8 * (9 + 16)


def test_unknown_op_raises_naming_it_and_the_known_ones() -> None:
    spec = LayerSpec.make("attention", {"dim": 64, "heads": 4}, (196, 64), (196, 64))
    with pytest.raises(LatencyError, match="attention") as exc:
        P.layer_ms(spec)
    for known in ("conv_bn_act", "dwsep", "head", "mbconv"):
        assert known in str(exc.value)


def test_register_op_extends_the_model() -> None:
    spec = LayerSpec.make("pw_only", {"cin": 16, "cout": 32}, (16, 8, 8), (32, 8, 8))
    M.register_op("pw_only", lambda s: [M.conv2d(16, 32, 1, 1, 8, 8)])
    try:
        assert P.layer_ms(spec) == pytest.approx(P.primitive_ms(M.conv2d(16, 32, 1, 1, 8, 8)))
        with pytest.raises(ValueError, match="pw_only"):
            M.register_op("pw_only", lambda s: [])
    finally:
        del M.DECOMPOSE["pw_only"]


def test_primitive_costs_grow_with_work() -> None:
    small, big = M.conv2d(32, 32, 1, 1, 14, 14), M.conv2d(32, 64, 1, 1, 14, 14)
    assert 0 < P.primitive_ms(small) < P.primitive_ms(big)
    dw3, dw5 = M.conv2d(96, 96, 3, 1, 28, 28, groups=96), M.conv2d(96, 96, 5, 1, 28, 28, groups=96)
    assert dw3.kind == "dw" and P.primitive_ms(dw3) < P.primitive_ms(dw5)


def test_cli_table_and_errors(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    assert C.main(["table", "--space", "mbconv", "--options", '{"resolution": 160}', "--out", str(out)]) == 0
    t = LatencyTable.load(out)
    space = get_space("mbconv", resolution=160)
    t.check_space("mbconv", space.options())
    assert set(t.entries) == {s.key for s in space.all_layers()}
    assert C.main(["table", "--space", "mbconv", "--options", "{bad", "--out", str(out)]) == 2
    assert C.main(["table", "--space", "no_such_space", "--out", str(out)]) == 2


# ---- the ops of the nasnet / hytra / vit_resnas spaces (pixel1_ops.py) ----------------------------
from latency.devices import pixel1_ops as O  # noqa: E402

NEW_SPACES = ("nasnet", "hytra", "vit_resnas")
#: documented bound for NASNet-A mobile (PIXEL1.md): a held-out net of the cell ops, within 15%
CELL_TOL = 15.0


def _window_pools(spec: LayerSpec) -> bool:
    """Layers that hold a k x k pooling window (priced at the depthwise rate, not counted in MACs)."""
    p = spec.kwargs
    return ((spec.op == "cell_op" and str(p["op"])[:3] in ("avg", "max")) or spec.op in ("hytra_stem", "vit_reduce")
            or (spec.op.startswith("hytra_res") and p["s"] == 2))


@pytest.mark.parametrize("name", NEW_SPACES)
def test_new_shipped_tables_cover_exactly_their_space(name: str, report: dict) -> None:
    table, space = load_table("pixel1", name), get_space(name)
    table.check_space(name, space.options())
    assert set(table.entries) == {s.key for s in space.all_layers()}
    for spec in space.all_layers():
        assert table.ms(spec.key) == pytest.approx(P.layer_ms(spec), rel=1e-9), spec.key
    m = table.metadata
    assert set(load_table("pixel1", "mbconv").metadata) <= set(m)   # same metadata as the mbconv table
    assert m["device"] == P.DEVICE and m["source"] == "model" and m["constants"] == asdict(P.CONSTANTS)
    assert m["trust"] == O.TRUST[name] and ("extrapolated" in m["trust"]) == (name != "nasnet")
    for group in ("fit", "cell_held_out", "loso"):
        assert m[group] == report[group], group


def test_lut_model_on_new_tables_equals_the_model() -> None:
    for name in NEW_SPACES:
        space = get_space(name)
        model = LUTModel(space, load_table("pixel1", name))
        for text in space.presets.values():
            arch = space.parse(text)
            assert model.predict(arch) == pytest.approx(P.net_ms(space.layers(arch)), rel=1e-9)


@pytest.mark.parametrize("name, options", [
    ("mbconv", {}), ("nasnet", {}), ("nasnet", {"variant": "darts"}), ("hytra", {}),
    ("hytra", {"act": "swish", "se": True}), ("vit_resnas", {}), ("vit_resnas", {"stem": "linear"}), ("ofa_mbv3", {}),
])
def test_compute_primitives_carry_exactly_the_ops_macs(name: str, options: dict) -> None:
    for spec in get_space(name, **options).all_layers():
        prims = M.decompose(spec)
        macs = sum(p.macs for p in prims if p.kind in ("conv", "pw", "dw", "fc"))
        if _window_pools(spec):
            assert macs > layer_macs(spec), spec.key
        else:
            assert macs == layer_macs(spec), spec.key
        assert P.layer_ms(spec) >= 0 and all(p.nbytes >= 0 for p in prims)


def test_cell_ops_order_by_work() -> None:
    from search_spaces.cell_ops import op_spec
    ms = {tok: P.layer_ms(op_spec(tok, 36, (32, 32), 1)) for tok in
          ("avg3x3", "max3x3", "max7x7", "conv1x1", "conv3x3", "conv3x3d2", "sep3x3", "sep5x5", "dil3x3")}
    assert ms["max3x3"] < ms["max7x7"] and ms["sep3x3"] < ms["sep5x5"] and ms["dil3x3"] < ms["sep3x3"]
    assert ms["conv1x1"] < ms["conv3x3"] == pytest.approx(ms["conv3x3d2"])   # dilation: same MACs and bytes
    assert P.layer_ms(op_spec("id", 36, (32, 32), 1)) == 0.0                  # identity: nothing to run
    assert P.layer_ms(op_spec("id", 36, (32, 32), 2)) > 0                     # factorized reduce


def test_attention_scales_quadratically_with_tokens() -> None:
    from search_spaces.vit_ops import block_spec
    qk = [p for p in M.decompose(block_spec(197, 192, 3, 64, 768)) if p.kind == "pw"]
    qk2 = [p for p in M.decompose(block_spec(2 * 197, 192, 3, 64, 768)) if p.kind == "pw"]
    # QKV, q.k, attn.v, proj, fc1, fc2: token GEMMs double, the two token x token products quadruple
    assert [b.macs / a.macs for a, b in zip(qk, qk2)] == [2, 4, 4, 2, 2, 2]
    base = P.layer_ms(block_spec(197, 192, 3, 64, 768))
    assert base < P.layer_ms(block_spec(197, 192, 4, 64, 768)) and base < P.layer_ms(block_spec(197, 192, 3, 64, 1024))


def test_hytra_swish_costs_more_than_relu() -> None:
    from search_spaces.hytra_ops import block_spec
    for op in ("conv", "att"):
        relu, swish = (block_spec(op, 1024, 1024, 256, 1, 14, act) for act in ("relu", "swish"))
        assert P.layer_ms(swish) > P.layer_ms(relu)


def test_nasnet_a_mobile_is_the_released_net_and_within_documented_error(report: dict) -> None:
    from search_spaces.ops import build_layer
    specs = R.nasnet_a_mobile()
    outputs = {specs[0].output_shape}          # the stem conv, then every cell's concat
    for s in specs:
        if s.op in ("cell_pre", "head"):           # cell inputs are earlier cell outputs
            assert s.input_shape in outputs, s.key
        outputs |= {s.output_shape} if s.op == "cell_combine" else set()
    assert specs[-1].output_shape == (1001,) and specs[-1].input_shape == (1056, 7, 7)   # "4 @ 1056"
    assert sum(layer_macs(s) for s in specs) / 1e6 == pytest.approx(564, rel=0.01)       # 564 M published
    params = sum(p.numel() for s in specs if s.op != "cell_combine" for p in build_layer(s).parameters())
    assert params / 1e6 == pytest.approx(5.3, rel=0.01)                                  # 5.3 M published
    row, = report["cell_held_out"]
    assert row["name"] == "NASNet-A mobile" and row["published_ms"] == 183.0
    assert row["predicted_ms"] == pytest.approx(P.net_ms(specs), abs=1e-3)
    assert abs(row["error_pct"]) <= CELL_TOL


def test_nasnet_a_cells_match_the_space_preset() -> None:
    space = get_space("nasnet")
    genes = [g for tok, x in R.NASNET_A_NORMAL + R.NASNET_A_REDUCE for g in (x, tok)]
    assert space.canonicalize(genes) == space.parse(space.presets["nasnet-a"])


def test_module_cli_registers_the_new_ops(tmp_path: Path) -> None:
    """`python -m latency.devices.pixel1` must price the new ops (the module runs as __main__)."""
    import subprocess
    import sys
    out = tmp_path / "h.json"
    opts = '{"width": 16, "depth": 4, "min_scales": [0], "resolution": 64}'
    res = subprocess.run([sys.executable, "-m", "latency.devices.pixel1_calibration", "table", "--space", "hytra",
                          "--options", opts, "--out", str(out)], check=False, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    t = LatencyTable.load(out)
    space = get_space("hytra", **__import__("json").loads(opts))
    assert set(t.entries) == {s.key for s in space.all_layers()}
