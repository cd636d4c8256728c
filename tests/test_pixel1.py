"""The Pixel 1 device model: shipped table, calibration, reference nets, extension point, CLI."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from latency.devices import pixel1 as P
from latency.devices import reference_nets as R
from latency.model import LUTModel
from latency.table import LatencyTable
from latency.targets import load_table, table_path
from nas.errors import LatencyError
from nas.layer import LayerSpec
from search_spaces import get_space
from search_spaces.ops import layer_macs

#: documented bounds (PIXEL1.md): calibration within 5%, held-out within 15%
CAL_TOL, HELD_TOL = 5.0, 15.0


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return load_table("pixel1", "mbconv")


@pytest.fixture(scope="module")
def report() -> dict:
    return P.report()


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
    assert m["constants"] == asdict(P.CONSTANTS)
    assert m["fitted"] == list(P.FIT_NAMES) and m["references"]


def test_metadata_errors_equal_current_errors(table: LatencyTable, report: dict) -> None:
    for group in ("calibration", "held_out"):
        shipped = {r["name"]: r for r in table.metadata[group]}
        assert set(shipped) == {r["name"] for r in report[group]}
        for row in report[group]:
            assert shipped[row["name"]]["published_ms"] == row["published_ms"]
            assert shipped[row["name"]]["predicted_ms"] == pytest.approx(row["predicted_ms"], abs=1e-3)
            assert shipped[row["name"]]["error_pct"] == pytest.approx(row["error_pct"], abs=1e-3)
    assert table.metadata["spnas_lut"] == report["spnas_lut"]


def test_calibration_and_held_out_within_documented_error(report: dict) -> None:
    assert [r["name"] for r in report["calibration"]] == [n.name for n in R.CALIBRATION]
    for row in report["calibration"]:
        assert abs(row["error_pct"]) <= CAL_TOL, row
    for row in report["held_out"]:
        assert abs(row["error_pct"]) <= HELD_TOL, row
    assert report["families"]["n"] == len(R.FAMILIES) and report["families"]["median_abs_error_pct"] <= 5.0
    # against Single-Path NAS's measured Pixel 1 LUT (80 layer choices, random archs; not fitted on)
    lut = report["spnas_lut"]
    assert lut["per_layer"]["n"] == 80 and lut["per_layer"]["median_abs_error_pct"] <= 10.0
    assert lut["archs"]["max_abs_error_pct"] <= 5.0 and lut["archs"]["spearman"] >= 0.95


def test_lut_model_predicts_single_path_nas(table: LatencyTable) -> None:
    space = get_space("mbconv")
    arch = space.parse(R.SINGLE_PATH_NAS_BLOCKS)
    assert [s.key for s in space.layers(arch)] == [s.key for s in R.single_path_nas()]
    pred = LUTModel(space, table).predict(arch)
    assert pred == pytest.approx(P.net_ms(R.single_path_nas()), rel=1e-9)
    assert abs(pred / 79.48 - 1) * 100 <= CAL_TOL


def test_fit_reproduces_the_written_constants() -> None:
    fitted = P.fit()
    assert {k: getattr(fitted, k) for k in P.FIT_NAMES} == P.FITTED
    c = P.CONSTANTS  # physically plausible: fractions of the nominal peak, below LPDDR4 peak 29.8 GB/s
    assert 0 < c.eff_dw < c.eff_pw <= 1.0 and 1.0 < c.bandwidth_gbs < 29.8


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


@pytest.mark.parametrize("net", R.CALIBRATION + R.HELD_OUT, ids=lambda n: n.name)
def test_reference_nets_match_published_size(net: R.ReferenceNet) -> None:
    specs = net.build()
    for a, b in zip(specs, specs[1:]):
        assert a.output_shape == b.input_shape, (a.key, b.key)
    assert specs[-1].output_shape == (1000,)
    if net.published_macs_m:
        assert sum(layer_macs(s) for s in specs) / 1e6 == pytest.approx(net.published_macs_m, rel=0.03)


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
    P.register_op("pw_only", lambda s: [P.conv2d(16, 32, 1, 1, 8, 8)])
    try:
        assert P.layer_ms(spec) == pytest.approx(P.primitive_ms(P.conv2d(16, 32, 1, 1, 8, 8)))
        with pytest.raises(ValueError, match="pw_only"):
            P.register_op("pw_only", lambda s: [])
    finally:
        del P.DECOMPOSE["pw_only"]


def test_primitive_costs_grow_with_work() -> None:
    small, big = P.conv2d(32, 32, 1, 1, 14, 14), P.conv2d(32, 64, 1, 1, 14, 14)
    assert 0 < P.primitive_ms(small) < P.primitive_ms(big)
    dw3, dw5 = P.conv2d(96, 96, 3, 1, 28, 28, groups=96), P.conv2d(96, 96, 5, 1, 28, 28, groups=96)
    assert dw3.kind == "dw" and P.primitive_ms(dw3) < P.primitive_ms(dw5)


def test_cli_table_and_errors(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    assert P.main(["table", "--space", "mbconv", "--options", '{"resolution": 160}', "--out", str(out)]) == 0
    t = LatencyTable.load(out)
    space = get_space("mbconv", resolution=160)
    t.check_space("mbconv", space.options())
    assert set(t.entries) == {s.key for s in space.all_layers()}
    assert P.main(["table", "--space", "mbconv", "--options", "{bad", "--out", str(out)]) == 2
    assert P.main(["table", "--space", "no_such_space", "--out", str(out)]) == 2
