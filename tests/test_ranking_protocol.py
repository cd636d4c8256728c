"""Issue 30: the stand-alone protocol of `nas bench ranking` (shapes2 by default, shapes3 to try) and its seed-noise statistic."""
from __future__ import annotations

import math

import pytest

from nas.bench.ranking import RankingConfig, correlate, format_result, seed_noise
from nas.core.errors import UsageError


def test_seed_noise_against_hand_computed_values() -> None:
    # seed differences 2, -2, 0 points: sd 2 -> noise 2 / sqrt 2; means 51, 61, 80: sd 14.73
    stand = {"a": [0.52, 0.50], "b": [0.60, 0.62], "c": [0.80, 0.80]}
    r = seed_noise(stand)
    assert r["noise_sd"] == pytest.approx(2 / math.sqrt(2))
    assert r["spread_sd"] == pytest.approx(14.7309, abs=1e-3)
    assert r["spread_over_noise"] == pytest.approx(r["spread_sd"] / r["noise_sd"]) and r["n"] == 3


def test_seed_noise_needs_three_archs_with_two_seeds() -> None:
    with pytest.raises(UsageError, match="at least 3 archs with 2 seeds, got 2"):
        seed_noise({"a": [0.5, 0.6], "b": [0.7, 0.7], "c": [0.9]})


def test_the_default_task_stays_shapes2_and_shapes3_is_accepted() -> None:
    # shapes3 did not beat shapes2 on 30 archs (README): the default stays version 2
    assert RankingConfig().dataset == "shapes2" and RankingConfig(dataset="shapes3:500").dataset == "shapes3:500"
    from nas.training.data import parse_spec
    assert parse_spec("shapes3:500").kind == "shapes3"


def test_correlate_reports_seed_noise_next_to_the_ceiling() -> None:
    from nas.bench.proxies import _truth
    cfg = RankingConfig(space="nats_sss", archs=10)
    table, _ = _truth("nats_sss", "cifar10", 10, 0)
    blocks = sorted(table)
    # seed 1 = seed 0 plus a fixed small offset per arch: the order survives except where archs are close
    stand = {b: [0.5 + 0.04 * i, 0.5 + 0.04 * i + (0.01 if i % 2 else -0.01)] for i, b in enumerate(blocks)}
    sup = {"supernet": {b: 0.1 * i for i, b in enumerate(blocks)}}
    r = correlate(cfg, sup, stand)
    assert r["correlations"]["ceiling_standalone_seed_vs_seed"]["kendall"] == pytest.approx(1.0)
    # seed differences +-1 point: sd sqrt(10 / 9), over sqrt 2
    assert r["seed_noise"]["noise_sd"] == pytest.approx(math.sqrt(10 / 9) / math.sqrt(2))
    assert "seed noise sd 0.7 points vs arch spread sd 12.2" in format_result(r)
