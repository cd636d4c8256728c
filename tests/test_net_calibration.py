"""In-context calibration when a table is profiled (latency/net_calibration.py): a tiny mbconv space,
timed for real with onnxruntime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import latency.validate as validate_mod

from latency.model import LUTModel
from latency.net_calibration import CALIBRATION_SEED, calibrate, fit_from_table, profile_calibrated, summary
from latency.profile import ProfileSettings, profile_space
from latency.table import LatencyTable
from latency.validate import Measured, sample_archs, validate
from latency.validate_report import format_report
from nas.cli.main import main
from search_spaces.catalog import get_space
from search_spaces.ops import layer_macs
from tests.test_validate import synthetic_table

TINY = {"resolution": 32, "width_mult": 0.25, "num_classes": 10}
FAST = ProfileSettings(warmup=1, repeats=3)


def fake_measure(space, archs, settings, joint=True, rounds=10, chunk=8, progress=True, clock="wall", desc="", quant=None,
                 layers_of=None):
    """Nets that take 25% more than their layers plus 0.02 ms: the in-context gap a LUT misses."""
    layers = [[(s, 0.05 + layer_macs(s) / 1e7) for s in (layers_of or space.layers)(a)] for a in archs]
    ovh = np.full(len(archs), 0.01)
    nets = np.array([1.25 * sum(ms for _, ms in ls) + 0.01 + 0.02 for ls in layers])
    return Measured(nets, 0.01 * nets, layers, ovh, 0.1, 1)


def test_calibration_learns_the_net_level_gap_and_searches_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration nets 25% slower than their layers: the stored correction must predict other nets
    (validate's seed 0) within 2%, where the plain LUT reads 20% low; LUTModel applies it."""
    monkeypatch.setattr(validate_mod, "measure", fake_measure)
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)          # entries 0.05 ms + 1 ms per 10 MMACs, like fake_measure's layers
    calibrate(space, table, FAST, "cpu", nets=10, progress=False)
    fit = table.metadata["correction"]["fit"]
    assert fit["source"] == "profile" and fit["samples_seed"] == CALIBRATION_SEED and fit["nets"] == 10
    assert fit["selected"] != "none" and 25 < fit["net_vs_layers_bias_pct"] < 30   # +25% and 0.02 ms per net
    held = sample_archs(space, 20, 0)
    assert not {a.key for a in sample_archs(space, 10, CALIBRATION_SEED)} & {a.key for a in held}
    truth = np.array([m.net_ms[0] for m in (fake_measure(space, [a], FAST) for a in held)])
    corrected, plain = LUTModel(space, table).predict_many(held), LUTModel(space, table, correct=False).predict_many(held)
    assert np.all(np.abs(corrected / truth - 1) < 0.02)
    assert np.mean(plain / truth - 1) < -0.15
    assert f"nets (seed 1000003) are +{fit['net_vs_layers_bias_pct']:.1f}% against" in str(summary(table))


def test_fit_from_the_context_nets_of_a_profile() -> None:
    """The profile path: context nets' medians per group in the metadata, the correction fitted
    against the table's own entries and call overhead (what LUTModel corrects)."""
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    archs = sample_archs(space, 10, CALIBRATION_SEED)
    truth = {a.key: 1.25 * sum(table.ms(s.key) for s in space.layers(a)) + 0.01 + 0.02 for a in archs}
    table.metadata["context_ms"] = {k: [v * 0.99, v, v * 1.01] for k, v in truth.items()}   # three groups
    fit_from_table(space, table, archs, "cpu", CALIBRATION_SEED, 1.0)
    fit = table.metadata["correction"]["fit"]
    assert fit["note"] == "profile context nets, table entries" and fit["nets"] == 10 and fit["selected"] != "none"
    held = sample_archs(space, 20, 0)
    want = np.array([1.25 * sum(table.ms(s.key) for s in space.layers(a)) + 0.03 for a in held])
    assert np.all(np.abs(LUTModel(space, table).predict_many(held) / want - 1) < 0.02)


def test_real_profile_in_context_and_report(tmp_path: Path) -> None:
    """onnxruntime for real on a tiny space: layers timed among 4 nets, the correction fitted, the
    report's joint rows, drift line and held-out seed; a finished table is not timed again."""
    space = get_space("mbconv", **TINY)
    out = tmp_path / "t.json"
    table = profile_calibrated(space, out, FAST, progress=False, clock="cpu", nets=4)
    m = table.metadata
    assert "with 4 whole nets" in m["timing"]
    assert set(m["context_ms"]) == {a.key for a in sample_archs(space, 4, CALIBRATION_SEED)}
    assert m["correction"]["fit"]["source"] == "profile" and m["correction"]["fit"]["nets"] == 4
    assert set(table.entries) == {s.key for s in space.all_layers()}
    r = validate(space, table, samples=3, seed=0, rounds=2, clock="cpu", progress=False).report
    assert {"table_lut", "table_corrected", "joint_lut", "joint_stored"} <= set(r["metrics"])
    text = format_report(r)
    assert "fitted when profiling, on 4 other nets (seed 1000003)" in text and "(drift: the nets' layers took" in text
    assert not any("not held out" in w for w in r["warnings"])
    stamp = out.stat().st_mtime_ns
    again = profile_calibrated(space, out, FAST, progress=False, clock="cpu", nets=4)
    assert again.metadata["correction"]["fit"]["date"] == m["correction"]["fit"]["date"]
    assert out.stat().st_mtime_ns == stamp


def test_validating_on_the_calibration_seed_warns() -> None:
    space = get_space("mbconv", **TINY)
    table = profile_space(space, None, FAST, progress=False, clock="cpu")
    calibrate(space, table, FAST, "cpu", nets=4, rounds=2, progress=False)
    r = validate(space, table, samples=3, seed=CALIBRATION_SEED, rounds=2, clock="cpu", progress=False).report
    assert any(f"seed {CALIBRATION_SEED}, this validation's seed" in w for w in r["warnings"])


def test_cli_profile_calibrates_and_refuses_too_few_nets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert main(["latency", "profile", "--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.25",
                 "--out", str(out), "--repeats", "4", "--warmup", "1", "--calibration-nets", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--calibration-nets must be 0 (none) or at least 3, got 1" in err
    assert not out.exists()
    assert main(["latency", "profile", "--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.25",
                 "--out", str(out), "--repeats", "4", "--warmup", "1", "--calibration-nets", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "calibration: 3 nets (seed 1000003)" in text
    assert LatencyTable.load(out).metadata["correction"]["fit"]["nets"] == 3
    none = tmp_path / "n.json"
    assert main(["latency", "profile", "--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.25",
                 "--out", str(none), "--repeats", "4", "--warmup", "1", "--calibration-nets", "0", "--quiet"]) == 0
    assert "correction" not in LatencyTable.load(none).metadata and "calibration:" not in capsys.readouterr().out
