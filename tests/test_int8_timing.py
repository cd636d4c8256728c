"""Int8 validation timing (latency/int8_timing.py) and the held-out correction choice of int8 profiles
(latency.correction.select, rule "one-se"): made-up timings, no onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

import latency.validate as validate_mod
from latency.correction import fit_correction, select
from latency.int8_timing import INT8_ROUNDS, MAX_SESSIONS, round_median, validate_grouping
from latency.profile import ProfileSettings
from latency.validate import measure, sample_archs
from nas.core.errors import LatencyError, UsageError
from search_spaces.catalog import get_space


def test_round_median_is_the_median_of_per_round_medians() -> None:
    # three rounds of three runs in time order; a slow spell takes 1 run of round 1, 1 of round 2, 2 of round 3
    t = [1.0, 1.0, 9.0, 2.0, 2.0, 9.0, 3.0, 9.0, 9.0]
    assert np.median(t) == 3.0            # pooled: the slow runs pull the median up
    assert round_median(t, 3) == 2.0      # round medians 1, 2, 9: the slow round counts once
    assert round_median(t, 1) == 3.0      # one round: the plain median
    assert round_median([5.0, 1.0], 4) == 3.0   # fewer runs than rounds: the plain median
    with pytest.raises(ValueError, match="rounds >= 1"):
        round_median(t, 0)
    with pytest.raises(ValueError, match="non-empty"):
        round_median([], 3)


def test_int8_validation_times_all_nets_in_one_group_float_keeps_groups_of_8() -> None:
    assert validate_grouping(False, 30, 47, None, None, 50) == (10, 8)
    assert validate_grouping(True, 30, 47, None, None, 50) == (INT8_ROUNDS, 0)
    assert validate_grouping(True, 30, 47, 5, 4, 50) == (5, 4)          # what was asked is kept
    assert validate_grouping(True, 30, 47, None, None, 3) == (3, 0)     # no more rounds than repeats
    rounds, chunk = validate_grouping(True, 100, MAX_SESSIONS - 50, None, None, 50)
    assert chunk > 0 and 1 + (MAX_SESSIONS - 50) + chunk <= MAX_SESSIONS   # too many sessions: groups that fit
    for bad, match in (((0, None), "--rounds must be between 1 and 1000, got 0"),
                       ((None, -1), "--chunk must be between 0"), ((5000, None), "--rounds")):
        with pytest.raises(UsageError, match=match):
            validate_grouping(True, 30, 47, *bad, 50)


def test_measure_with_round_medians_uses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """measure(round_medians=True) reports each net as the median of its round medians."""
    space = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
    archs = sample_archs(space, 1, 0)
    t = np.array([1.0, 1.0, 9.0, 2.0, 2.0, 9.0, 3.0, 9.0, 9.0])

    def fake(sessions, inputs, warmup, repeats, rounds=5, progress=None, clock="wall", rewarm=1, switches=None):
        assert rounds == 3
        return [t.copy() for _ in sessions]
    monkeypatch.setattr(validate_mod, "time_interleaved", fake)
    settings = ProfileSettings(warmup=0, repeats=9)
    pooled = measure(space, archs, settings, joint=False, rounds=3, chunk=0, progress=False)
    rounded = measure(space, archs, settings, joint=False, rounds=3, chunk=0, progress=False, round_medians=True)
    assert pooled.net_ms.tolist() == [3.0] and rounded.net_ms.tolist() == [2.0]


def test_one_se_rule_keeps_the_simplest_set_within_one_standard_error() -> None:
    scores = {"none": 17.6, "offset": 16.4, "scale": 19.1, "scale+count": 20.7, "scale+count+act": 20.7, "full": 21.3}
    se = {k: 2.0 for k in scores}
    eligible = ["none", "offset", "scale"]
    assert select(scores, se, eligible, "best") == "offset"     # lowest held-out MAPE, by 1.2 points
    assert select(scores, se, eligible, "one-se") == "none"     # within one SE (2.0) of it: the simpler one
    assert select(scores, {k: 0.5 for k in scores}, eligible, "one-se") == "offset"   # a clear win is kept
    with pytest.raises(LatencyError, match="unknown correction rule 'lowest'; valid: best, one-se"):
        select(scores, se, eligible, "lowest")


def _nets(rng: np.random.Generator, n: int, gap_ms: float, noise: float) -> tuple[list, np.ndarray, np.ndarray]:
    space = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
    archs = sample_archs(space, n, 3)
    layers = [[(s, 0.05 + 0.01 * i) for i, s in enumerate(space.layers(a))] for a in archs]
    ovh = np.full(n, 0.01)
    lut = np.array([0.01 + sum(ms for _, ms in ls) for ls in layers])
    return layers, ovh, (lut + gap_ms) * np.exp(rng.normal(0.0, noise, n))


def test_fit_correction_one_se_on_noisy_and_on_clearly_biased_nets() -> None:
    rng = np.random.default_rng(0)
    layers, ovh, noisy = _nets(rng, 10, 0.0, 0.15)          # no gap, 15% noise: nothing worth learning
    corr = fit_correction(layers, ovh, noisy, rule="one-se")
    assert corr.fit["selected"] == "none" and corr.fit["rule"] == "one-se" and "none" in corr.fit["cv_se_pct"]
    layers, ovh, biased = _nets(rng, 10, 2.0, 0.01)         # every net 2 ms over its layers: a real gap
    corr = fit_correction(layers, ovh, biased, rule="one-se")
    assert corr.fit["selected"] != "none"
    best = fit_correction(layers, ovh, biased)
    assert best.fit["selected"] == corr.fit["selected"] and "rule" not in best.fit   # the default (float) fit


def test_cli_validate_refuses_out_of_range_rounds_and_chunk(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    from tests.test_validate import synthetic_table
    space = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
    path = tmp_path / "t.json"
    synthetic_table(space).save(path)
    opts = ["-o", "resolution=32", "-o", "width_mult=0.25", "-o", "num_classes=10"]
    for flag, value, msg in (("--rounds", "0", "--rounds must be between 1 and 1000, got 0"),
                             ("--chunk", "-2", "--chunk must be between 0 (all nets in one group) and 10000, got -2")):
        assert main(["latency", "validate", "--space", "mbconv", *opts, "--table", str(path), flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
