"""The preemption correction of the CPU clock (latency.clocks) and its use in profiling."""
from __future__ import annotations

import numpy as np
import pytest

from latency.clocks import clock_function, correct, switch_cost, switch_counter
from nas.core.errors import UsageError


def test_switch_cost_recovers_a_known_slope_across_sessions():
    rng = np.random.default_rng(0)
    # a long net (5 ms, often preempted) and two short layers (rarely): 0.3 ms per switch
    means, probs = [5.0, 0.2, 0.6], [1.5, 0.05, 0.2]
    switches = [rng.poisson(p, 400) for p in probs]
    times = [m + 0.3 * k + rng.normal(0, 0.02, len(k)) for m, k in zip(means, switches)]
    assert switch_cost(times, switches) == pytest.approx(0.3, abs=0.01)
    fixed, report = correct(times, switches)
    # the medians come back to the unpreempted times; raw medians of the net are off by ~0.3 ms
    assert abs(np.median(times[0]) - 5.0) > 0.25
    assert [np.median(t) for t in fixed] == pytest.approx(means, abs=0.02)
    assert report.cost_ms == pytest.approx(0.3, abs=0.01)
    assert 0 < report.runs_switched_pct < 100


def test_no_correction_without_variation_or_for_negative_slope():
    times = [np.array([1.0, 1.1, 0.9])]
    assert switch_cost(times, [np.zeros(3)]) is None
    fixed, report = correct(times, [np.zeros(3)])
    assert np.array_equal(fixed[0], times[0]) and report.cost_ms is None
    # more switches with *less* time: no negative cost is ever added
    assert switch_cost([np.array([2.0, 1.0])], [np.array([0, 1])]) == 0.0


def test_clock_names_and_counter():
    assert clock_function("wall")() > 0
    with pytest.raises(UsageError, match="unknown clock 'sun'; valid: wall, cpu"):
        clock_function("sun")
    count = switch_counter()
    if count is not None:      # Linux: a count that never goes down
        a = count()
        assert count() >= a >= 0


def test_profile_records_the_clock_and_refuses_to_resume_with_another(tmp_path):
    from latency.profile import ProfileSettings, profile_space
    from nas.core.errors import LatencyError
    from search_spaces.catalog import get_space
    space = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
    out = tmp_path / "t.json"
    settings = ProfileSettings(warmup=1, repeats=3)
    table = profile_space(space, out, settings, progress=False, clock="cpu")
    assert table.metadata["clock"] == "cpu" and len(table.entries) == len(space.all_layers())
    with pytest.raises(LatencyError, match="profiled with the cpu clock, not wall"):
        profile_space(space, out, settings, progress=False, clock="wall")
    with pytest.raises(UsageError, match="needs threads=1"):
        profile_space(space, tmp_path / "u.json", ProfileSettings(threads=2, warmup=1, repeats=3),
                      progress=False, clock="cpu")
