"""Validation metrics, the learned correction, and `nas latency validate` end to end (tiny space)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latency.correction import fit_correction, net_features
from latency.model import LUTModel
from latency.profile import ProfileSettings
from latency.table import LatencyTable
from latency.targets import load_table
from latency.validate import (
    agreement,
    runtime_warnings,
    sample_archs,
    settings_of,
    validate,
    with_correction,
)
from latency.validate_report import format_report
from nas.cli.main import main
from nas.core.errors import LatencyError, UsageError
from search_spaces.catalog import get_space
from search_spaces.ops import layer_macs

TINY = {"resolution": 32, "width_mult": 0.25, "num_classes": 10}


FAST = ProfileSettings(warmup=1, repeats=3)


def synthetic_table(space, settings: ProfileSettings = FAST) -> LatencyTable:
    """Entries from MACs (no timing): 0.05 ms + 1 ms per 10 MMACs; onnxruntime metadata of this machine."""
    import onnxruntime as ort

    from latency.profile import cpu_model
    meta = {"device": "test", "cpu": cpu_model(), "runtime": "onnxruntime", "runtime_version": ort.__version__,
            **settings.__dict__, "call_overhead_ms": 0.01}
    table = LatencyTable(space.name, space.options(), meta)
    for s in space.all_layers():
        table.add(s.key, 0.05 + layer_macs(s) / 1e7)
    return table


# ---- metrics --------------------------------------------------------------------------------
def test_agreement_hand_computed() -> None:
    m = agreement([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["n"] == 4
    assert m["spearman"] == pytest.approx(0.8)            # 1 - 6*2/(4*15)
    assert m["kendall"] == pytest.approx(4 / 6)           # 5 concordant, 1 discordant pairs
    assert m["rmse_ms"] == pytest.approx(np.sqrt(2 / 4))
    rel = np.array([0, -1 / 3, 0.5, 0])
    assert m["mape_pct"] == pytest.approx(np.abs(rel).mean() * 100)
    assert m["bias_pct"] == pytest.approx(rel.mean() * 100)
    assert m["within_5_pct"] == 50 and m["within_10_pct"] == 50


def test_agreement_shares_and_bias() -> None:
    meas = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    pred = meas * np.array([1.04, 0.92, 1.0, 1.2, 0.97])
    m = agreement(pred, meas)
    assert m["within_5_pct"] == pytest.approx(60) and m["within_10_pct"] == pytest.approx(80)
    assert m["mape_pct"] == pytest.approx(np.mean([4, 8, 0, 20, 3]))
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert np.isnan(agreement([1.0], [2.0])["spearman"])
    with pytest.raises(LatencyError, match="equal-length"):
        agreement([1.0, 2.0], [1.0])
    with pytest.raises(LatencyError, match="positive"):
        agreement([1.0, 2.0], [1.0, 0.0])


def test_sample_archs_distinct_and_seeded() -> None:
    space = get_space("mbconv", **TINY)
    a, b = sample_archs(space, 12, seed=3), sample_archs(space, 12, seed=3)
    assert a == b and len({x.key for x in a}) == 12
    with pytest.raises(UsageError, match="--samples"):
        sample_archs(space, 0, seed=0)


# ---- correction -----------------------------------------------------------------------------
def _biased_case(space, table, n: int, seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    """Nets whose true latency is 1.3 x LUT + 0.4 ms + 0.02 ms per layer (+1% noise)."""
    rng = np.random.default_rng(seed)
    nets = [[(s, table.ms(s.key)) for s in space.layers(space.sample(rng))] for _ in range(n)]
    lut = np.array([0.01 + sum(ms for _, ms in ls) for ls in nets])
    true = 1.3 * lut + 0.4 + 0.02 * np.array([len(ls) for ls in nets])
    return nets, lut, true * (1 + 0.01 * rng.standard_normal(n))


def test_correction_reduces_error_on_biased_case() -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    nets, _, meas = _biased_case(space, table, 30, seed=0)
    corr = fit_correction(nets, 0.01, meas)
    t_nets, t_lut, t_meas = _biased_case(space, table, 30, seed=1)   # held out
    after = np.array([corr.predict(ls, 0.01) for ls in t_nets])
    before_m, after_m = agreement(t_lut, t_meas), agreement(after, t_meas)
    assert before_m["mape_pct"] > 20 and after_m["mape_pct"] < 3
    assert after_m["within_5_pct"] == 100
    assert corr.fit["n"] == 30 and corr.fit["train_mape_pct_after"] < corr.fit["train_mape_pct_before"]
    with pytest.raises(LatencyError, match="at least 3"):
        fit_correction(nets[:2], 0.01, meas[:2])


def test_correction_keeps_plain_lut_when_nothing_to_learn() -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    rng = np.random.default_rng(5)
    nets = [[(s, table.ms(s.key)) for s in space.layers(space.sample(rng))] for _ in range(8)]
    lut = np.array([0.01 + sum(ms for _, ms in ls) for ls in nets])
    corr = fit_correction(nets, 0.01, lut * (1 + 0.03 * rng.standard_normal(8)))   # unbiased noise only
    assert corr.fit["selected"] in ("none", "offset") and set(corr.fit["cv_mape_pct"]) >= {"none", "full"}
    nets_b, _, meas_b = _biased_case(space, table, 30, seed=0)
    assert fit_correction(nets_b, 0.01, meas_b).fit["selected"] not in ("none", "offset")


def test_rich_feature_sets_need_five_nets_per_feature() -> None:
    """10 nets: at most 2 features (offset, scale, scale+count); 30 nets: up to 6."""
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    nets, _, meas = _biased_case(space, table, 10, seed=0)
    fit = fit_correction(nets, 0.01, meas).fit
    assert fit["eligible"] == ["none", "offset", "scale", "scale+count"] and fit["selected"] in fit["eligible"]
    assert "full" in fit["cv_mape_pct"]   # still scored, for the record
    nets, _, meas = _biased_case(space, table, 30, seed=0)
    assert "scale+count+act" in fit_correction(nets, 0.01, meas).fit["eligible"]


def test_corrected_table_round_trips_and_stays_vectorised(tmp_path: Path, rng: np.random.Generator) -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    nets, _, meas = _biased_case(space, table, 20, seed=2)
    corr = fit_correction(nets, 0.01, meas)
    path = with_correction(table, corr).save(tmp_path / "c.json")
    loaded = LatencyTable.load(path)
    model = LUTModel(space, loaded)
    assert model.correction == corr                            # plain JSON, no pickle
    archs = [space.sample(rng) for _ in range(25)]
    loop = np.array([model.predict(a) for a in archs])
    np.testing.assert_allclose(model.predict_many(archs), loop, rtol=1e-10)
    direct = [corr.predict([(s, loaded.ms(s.key)) for s in space.layers(a)], 0.01) for a in archs]
    np.testing.assert_allclose(loop, direct, rtol=1e-10)
    plain = LUTModel(space, loaded, correct=False)
    assert plain.correction is None and not np.allclose(plain.predict_many(archs), loop)
    assert model.min_ms() <= loop.min()


def test_corrupt_correction_refused() -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    table.metadata["correction"] = {"format": "nas-latency-correction/1", "intercept_ms": "x", "weights": {}}
    with pytest.raises(LatencyError, match="finite 'intercept_ms'"):
        LUTModel(space, table)
    table.metadata["correction"] = {"format": "pickle"}
    with pytest.raises(LatencyError, match="format 'pickle'"):
        LUTModel(space, table)


def test_net_features_are_sums_over_layers() -> None:
    space = get_space("mbconv", **TINY)
    layers = [(s, 1.0) for s in space.layers(space.sample(np.random.default_rng(0)))]
    f = net_features(layers)
    assert f["count"] == len(layers) and f["ms"] == pytest.approx(len(layers))
    assert f["count:mbconv"] == sum(s.op == "mbconv" for s, _ in layers)
    assert f["macs_m"] == pytest.approx(sum(layer_macs(s) for s, _ in layers) / 1e6)


# ---- settings and refusals ------------------------------------------------------------------
def test_settings_come_from_table_and_model_tables_refused() -> None:
    space = get_space("mbconv", **TINY)
    s = settings_of(synthetic_table(space, ProfileSettings(threads=1, warmup=2, repeats=7)))
    assert (s.warmup, s.repeats, s.threads) == (2, 7, 1)
    with pytest.raises(LatencyError, match="not measured with onnxruntime"):
        settings_of(load_table("pixel1", "mbconv"))


def test_other_runtime_version_warns_and_missing_provider_fails() -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    table.metadata["runtime_version"] = "0.0.1"
    assert any("onnxruntime 0.0.1" in w for w in runtime_warnings(table))
    table.metadata["provider"] = "NoSuchExecutionProvider"
    with pytest.raises(UsageError, match="available: .*CPUExecutionProvider"):
        validate(space, table, samples=2, progress=False)
    with pytest.raises(LatencyError, match="space 'mbconv'"):
        validate(get_space("nasnet"), table, samples=2, progress=False)


# ---- end to end -----------------------------------------------------------------------------
def test_cli_validate_joint_fit_plot_and_save(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space("mbconv", **TINY)
    tpath = synthetic_table(space).save(tmp_path / "t.json")
    opts = [x for k, v in TINY.items() for x in ("-o", f"{k}={v}")]
    rc = main(["latency", "validate", "--space", "mbconv", *opts, "--table", str(tpath), "--samples", "6",
               "--rounds", "3", "--chunk", "3", "--fit-correction", "--holdout", "0.5", "--plot",
               str(tmp_path / "p.png"), "--save-correction", str(tmp_path / "c.json"), "--quiet", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 6 and r["groups"] == 2 and r["joint"] is True
    assert set(r["metrics"]) == {"table_lut", "joint_lut"}
    for m in r["metrics"].values():
        assert m["n"] == 6 and -1 <= m["spearman"] <= 1 and m["rmse_ms"] >= 0
    assert r["holdout"]["n_fit"] == 3 and r["holdout"]["n_test"] == 3
    assert {"joint_lut", "joint_corrected", "table_lut", "table_corrected"} <= set(r["holdout"])
    rows = r["archs"]
    assert len(rows) == 6 and all(a["measured_ms"] > 0 and a["joint_lut_ms"] > 0 for a in rows)
    # the table LUT column is the table's own prediction
    preds = LUTModel(space, LatencyTable.load(tpath)).predict_many([space.parse(a["arch"]) for a in rows])
    np.testing.assert_allclose([a["table_lut_ms"] for a in rows], preds)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    saved = LatencyTable.load(tmp_path / "c.json")
    assert saved.metadata["correction"]["fit"]["n"] == 6 and saved.entries == LatencyTable.load(tpath).entries
    assert LUTModel(space, saved).correction is not None


def test_cli_validate_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a device model is the wrong kind of target for validate (usage, 2), as pixel1-2019 is
    assert main(["latency", "validate", "--space", "mbconv", "--target", "pixel1", "--samples", "2"]) == 2
    assert "not a table timed with onnxruntime" in capsys.readouterr().err
    assert main(["latency", "validate", "--space", "mbconv", "--target", "cpu", "--save-correction", "x.json"]) == 2
    assert "--fit-correction" in capsys.readouterr().err


def test_cpu_clock_run_and_thread_check() -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    v = validate(space, table, samples=2, rounds=2, clock="cpu", progress=False)
    assert v.report["clock"] == "cpu" and all(a["measured_ms"] > 0 for a in v.report["archs"])
    assert any("cpu clock" in w for w in v.report["warnings"])      # the table was timed with wall time
    # the preemption correction is reported, with the uncorrected rows next to the corrected ones
    assert v.report["preemption"] and set(v.report["uncorrected"]) == {"table_lut", "joint_lut"}
    assert "raw cpu clock" in format_report(v.report)
    table.metadata["threads"] = 2
    with pytest.raises(UsageError, match="needs threads=1"):
        validate(space, table, samples=2, clock="cpu", progress=False)


def test_nets_only_mode_fits_on_table_entries() -> None:
    space = get_space("mbconv", **TINY)
    v = validate(space, synthetic_table(space), samples=4, rounds=2, joint=False, fit=True, holdout=0.25,
                 progress=False)
    r = v.report
    assert set(r["metrics"]) == {"table_lut"} and r["holdout"]["source"] == "table"
    assert r["holdout"]["n_fit"] == 3 and {"table_lut", "table_corrected"} <= set(r["holdout"])
    assert v.correction is not None and v.correction.fit["n"] == 4
    with pytest.raises(UsageError, match="at least 3 archs to fit on"):
        validate(space, synthetic_table(space), samples=4, fit=True, holdout=0.5, progress=False)
