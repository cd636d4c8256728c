"""`differentiable` (ProxylessNAS-style over any supernet): policy, expected latency, bound -> faster net."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latency.devices.pixel1 import build_table
from latency.model import LUTModel
from nas.core.errors import UsageError
from nas.differentiable.proxyless import ArchPolicy, ExpectedLatency, ProxylessConfig, penalty
from search_spaces.catalog import get_space

MBCONV = get_space("mbconv", resolution=32, width_mult=0.25)


def test_expected_latency_is_the_lut_prediction_at_a_one_hot_policy_and_the_mean_at_uniform() -> None:
    lut = LUTModel(MBCONV, build_table(MBCONV))
    policy = ArchPolicy(MBCONV)
    term = ExpectedLatency(lut)
    arch = MBCONV.sample(np.random.default_rng(3))
    with torch.no_grad():
        for lg, d, g in zip(policy.logits, MBCONV.decisions, arch.genes):
            lg.fill_(-1e4)
            lg[d.choices.index(g)] = 1e4
    assert float(term(policy).detach()) == pytest.approx(lut.predict(arch), rel=1e-5)
    # uniform logits: the mean over every arch = const + sum of per-decision means (exact, separable)
    with torch.no_grad():
        for lg in policy.logits:
            lg.zero_()
    rows = [r[np.isfinite(r)] for r in lut._matrix]
    assert float(term(policy).detach()) == pytest.approx(lut._const + sum(r.mean() for r in rows), rel=1e-5)
    # it is differentiable: the gradient lowers the logit of each decision's slowest choice
    term(policy).backward()
    for lg, r in zip(policy.logits, rows):
        if np.ptp(r) > 0:
            assert int(lg.grad.argmax()) == int(np.argmax(r))


def test_policy_samples_only_valid_archs_and_derives_the_most_probable() -> None:
    space = get_space("nasnet", variant="darts", channels=4, cells=1, resolution=16)
    policy = ArchPolicy(space)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch, idx = policy.sample(rng)
        space.validate(arch)          # canonical, two distinct inputs per node
        assert torch.isfinite(policy.log_prob(idx))
    target = space.parse(space.presets["darts-v2"])
    with torch.no_grad():
        for lg, d, g in zip(policy.logits, space.decisions, target.genes):
            lg[d.choices.index(g)] = 5.0
    assert policy.derive(rng) == target


def test_penalty_is_zero_inside_the_bound_and_relative_outside() -> None:
    assert penalty(9.0, 10.0, 20.0) == 0.0 and penalty(12.0, None, 20.0) == 0.0
    assert penalty(12.0, 10.0, 20.0) == pytest.approx(4.0)
    with pytest.raises(UsageError, match="latency_ms must be positive"):
        ProxylessConfig(latency_ms=0.0)


def _search(tmp_path, bound: float, tag: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    from nas import SearchConfig, search
    table = build_table(MBCONV).save(tmp_path / "mbconv-pixel1.json")
    cfg = SearchConfig(space="mbconv", space_options=MBCONV.options(), targets=(str(table),), latency_ms=(bound,),
                       strategy="differentiable", strategy_options={"calib_batches": 2}, trials=1, seed=0,
                       out=str(tmp_path / tag), dataset="synthetic:256", epochs=2, batch_size=32)
    return search(cfg, progress=False).summary


@pytest.mark.slow
def test_tighter_bound_gives_a_faster_net_on_mbconv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lut = LUTModel(MBCONV, build_table(MBCONV))
    lo = lut.min_ms()
    med = float(np.median([lut.predict(MBCONV.sample(np.random.default_rng(i))) for i in range(50)]))
    tight, loose = lo + 0.3 * (med - lo), lo + 2.0 * (med - lo)
    st, sl = _search(tmp_path, tight, "tight"), _search(tmp_path, loose, "loose")
    # measured: 2.08 ms (bound 2.21) vs 2.49 ms (bound 2.99); the policy itself got there, no repair
    assert st["latency_ms"] <= tight < sl["latency_ms"] <= loose
    assert not st["training"]["repaired"] and st["training"]["latency_term"] == "expected (separable LUT)"
    hist = st["training"]["history"]
    assert hist[-1]["expected_latency_ms"] < hist[0]["expected_latency_ms"]
    assert st["exports"]["max_abs_diff_vs_torch"] < 1e-4
