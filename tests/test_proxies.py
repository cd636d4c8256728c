"""Zero-cost proxies: hand-checked values on tiny nets, every proxy on every registered space,
the ensemble's per-arch score, the evaluator's options and the `zero-cost` strategy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas.core.errors import UsageError
from nas.evaluators.catalog import EVALUATORS, make_evaluator
from nas.evaluators.proxies import PROXIES, fisher, grad_norm, jacob_cov, snip, synflow
from nas.evaluators.zero_cost import (
    ENSEMBLE,
    ZeroCostEvaluator,
    proxy_names,
)
from nas.pipeline.runner import run_search
from nas.strategies.catalog import STRATEGIES
from search_spaces.catalog import SPACES, get_space

#: per space, options that make nets tiny (spaces not listed use their test-contract options)
TINY: dict[str, dict] = {
    "mbconv": {"resolution": 32, "width_mult": 0.25, "num_classes": 10},
    "nasnet": {"resolution": 32, "channels": 8, "cells": 1, "num_classes": 10},
    "hytra": {"resolution": 32, "num_classes": 10, "width": 16},
    "ofa_mbv3": {"resolution": 32, "num_classes": 10},
    "vit_resnas": {"resolution": 32, "patch": 4, "num_classes": 10, "widths": [[8, 16], [16, 24], [32]],
                   "heads": [[1, 2], [2], [2, 4]], "head_dims": [4, 4, 8], "mlp": [[8, 16], [32], [32, 64]],
                   "depths": [[1, 2], [1], [1, 2]]},
}
MODEL_PROXIES = [n for n in PROXIES.names() if PROXIES.get(n).model_fn is not None]


def tiny(name: str):  # type: ignore[no-untyped-def]
    try:
        return get_space(name, **TINY.get(name, {}))
    except UsageError:
        from test_space_contract import small
        return small(name)


def mlp(widths: list[int], value: float | None = None, act: type[nn.Module] = nn.ReLU, bias: bool = False) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        lin = nn.Linear(a, b, bias=bias)
        if value is not None:
            nn.init.constant_(lin.weight, value)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


# ---- hand-checked definitions ---------------------------------------------------------------------
def test_synflow_is_layers_times_path_norm_for_a_bias_free_net() -> None:
    # R = 1^T |W3||W2||W1| 1 and synflow = sum_l sum w dR/dw = (number of layers) * R (Euler)
    torch.manual_seed(0)
    net = mlp([4, 5, 3, 2])
    ws = [m.weight.detach().abs() for m in net if isinstance(m, nn.Linear)]
    r = float(torch.ones(2, dtype=torch.float64) @ ws[2] @ ws[1] @ ws[0] @ torch.ones(4, dtype=torch.float64))
    assert synflow(net, torch.randn(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.long)) == \
        pytest.approx(math.log(3 * r), rel=1e-9)


def test_synflow_linearises_bn_and_bounded_activations() -> None:
    torch.manual_seed(1)
    plain = mlp([4, 6, 6, 2], act=nn.ReLU)
    clipped = nn.Sequential(plain[0], nn.BatchNorm1d(6), nn.ReLU6(), plain[2], nn.GELU(), plain[4]).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.long)
    import copy
    assert synflow(copy.deepcopy(clipped), x, y) == pytest.approx(synflow(copy.deepcopy(plain), x, y), rel=1e-12)


def test_synflow_does_not_overflow_where_float32_would() -> None:
    depth, width = 120, 16          # R = width * width^depth = 16^121 ~ 1e145 (float32 max ~ 3e38)
    net = mlp([width] * (depth + 1), value=1.0)
    expected = math.log(depth) + (depth + 1) * math.log(width)
    assert synflow(net, torch.ones(1, width), torch.zeros(1, dtype=torch.long)) == pytest.approx(expected, rel=1e-9)


def _manual_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    return [(m.weight.detach().clone(), m.weight.grad.clone()) for m in net if isinstance(m, nn.Linear)]


def test_snip_and_grad_norm_match_manual_gradients() -> None:
    torch.manual_seed(2)
    net = mlp([5, 7, 3], bias=True)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    pairs = _manual_grads(net, x, y)
    assert snip(net, x, y) == pytest.approx(sum(float((w * g).abs().sum()) for w, g in pairs), rel=1e-9)
    assert grad_norm(net, x, y) == pytest.approx(sum(float(g.norm()) for _, g in pairs), rel=1e-9)


def test_fisher_of_a_single_linear_layer() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 3)).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    out = net(x)
    out.retain_grad()
    nn.functional.cross_entropy(out, y).backward()
    expected = float(0.5 * (out.detach() * out.grad).pow(2).mean(0).sum())
    assert fisher(net, x, y) == pytest.approx(expected, rel=1e-9)


def test_jacob_cov_of_a_linear_net() -> None:
    # every input has the same Jacobian: correlation matrix all ones, eigenvalues (n, 0, ..., 0)
    n, k = 6, 1e-5
    net = nn.Sequential(nn.Linear(8, 3)).double()
    score = jacob_cov(net, torch.randn(n, 8, dtype=torch.float64), torch.zeros(n, dtype=torch.long))
    expected = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    assert score == pytest.approx(expected, rel=1e-6)


# ---- every proxy on every space -----------------------------------------------------------------
@pytest.mark.parametrize("name", SPACES.names())
def test_every_proxy_scores_every_space(name: str) -> None:
    space = tiny(name)
    ev = ZeroCostEvaluator(space, seed=0, proxy="synflow", batch=4, resolution=None)
    arch = space.sample(np.random.default_rng(0))
    values = ev.proxies(arch, PROXIES.names())
    assert set(values) == set(PROXIES.names())
    for proxy, v in values.items():
        assert isinstance(v, float) and math.isfinite(v), (name, proxy, v)
    assert values["flops"] == space.macs(arch)
    assert values["params"] == sum(p.numel() for p in ev.build(arch).parameters())
    again = ev.proxies(arch, MODEL_PROXIES)
    for proxy in MODEL_PROXIES:  # same seed, same batch: identical scores
        assert again[proxy] == pytest.approx(values[proxy], rel=1e-9, abs=1e-12), proxy


def test_proxies_tell_archs_apart() -> None:
    space = tiny("mbconv")
    ev = ZeroCostEvaluator(space, seed=0, batch=4, resolution=None)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(3)]
    rows = [ev.proxies(a, MODEL_PROXIES) for a in archs]
    for proxy in MODEL_PROXIES:
        if proxy != "swap":   # swap counts at most 2**batch patterns: 16 for all three at batch 4
            assert len({round(r[proxy], 9) for r in rows}) == 3, proxy
    assert {r["swap"] for r in rows} == {16.0}
    wide = ZeroCostEvaluator(space, seed=0, batch=16, resolution=None)
    assert len({wide.proxies(a, ["swap"])["swap"] for a in archs}) == 3


# ---- the evaluator --------------------------------------------------------------------------------
def test_evaluator_reports_the_chosen_proxy_as_score() -> None:
    space = tiny("mbconv")
    arch = space.sample(np.random.default_rng(1))
    out = make_evaluator("zero-cost", space, seed=0, proxy="snip", batch=4)(arch)
    assert out["score"] == out["snip"]
    assert out["macs_m"] == pytest.approx(space.macs(arch) / 1e6)
    assert out["params_m"] > 0


def test_bad_proxy_options_name_the_valid_ones() -> None:
    space = tiny("mbconv")
    with pytest.raises(UsageError, match="valid proxies: .*ensemble.*synflow"):
        make_evaluator("zero-cost", space, proxy="nope")
    with pytest.raises(UsageError, match="at least 2"):
        make_evaluator("zero-cost", space, proxy=ENSEMBLE, members="synflow")
    with pytest.raises(UsageError, match="'nope'"):
        make_evaluator("zero-cost", space, proxy=ENSEMBLE, members="synflow,nope")
    with pytest.raises(UsageError, match="no option 'colour'.*proxy"):
        make_evaluator("zero-cost", space, colour="red")
    assert "zero-cost" in EVALUATORS and "ensemble" in proxy_names()


def test_ensemble_is_a_per_arch_score_independent_of_order() -> None:
    space = tiny("mbconv")
    members = ("synflow", "flops", "naswot")
    rng = np.random.default_rng(2)
    a, b = space.sample(rng), space.sample(rng)
    ev1 = ZeroCostEvaluator(space, seed=0, proxy=ENSEMBLE, members=",".join(members), reference=5, batch=4)
    ev2 = ZeroCostEvaluator(space, seed=0, proxy=ENSEMBLE, members=list(members), reference=5, batch=4)
    first = [ev1(a)["score"], ev1(b)["score"]]
    second = [ev2(b)["score"], ev2(a)["score"]][::-1]
    assert first == pytest.approx(second, rel=1e-12)
    out = ev1(a)
    stats = ev1._reference_stats()
    z = [(math.log(out["flops"]) - stats["flops"][0]) / stats["flops"][1],
         (out["synflow"] - stats["synflow"][0]) / stats["synflow"][1],
         (out["naswot"] - stats["naswot"][0]) / stats["naswot"][1]]
    assert out["score"] == out[ENSEMBLE] == pytest.approx(float(np.mean(z)), rel=1e-9)


def test_real_batch_from_a_dataset() -> None:
    space = tiny("mbconv")
    ev = ZeroCostEvaluator(space, seed=0, proxy="naswot", batch=8, resolution=None, dataset="synthetic:40")
    assert ev._x.shape == (8, 3, 32, 32) and ev._y.max() < 10
    assert math.isfinite(ev(space.sample(np.random.default_rng(0)))["score"])


def test_default_batch_is_real_digits_and_noise_stays_an_option() -> None:
    """The default proxy batch is a seeded subset of the embedded digits (as the references score real
    mini-batches); `dataset=noise` keeps seeded Gaussian images with random labels."""
    import torch

    from nas.training.data import load_dataset
    from nas.evaluators.zero_cost import DEFAULT_DATASET, NOISE
    space = tiny("mbconv")
    ev = ZeroCostEvaluator(space, seed=3, proxy="naswot", batch=8, resolution=None)
    assert ev.dataset == DEFAULT_DATASET == "digits"
    x, y = load_dataset("digits", split="train", seed=3, resolution=32)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:8]
    torch.testing.assert_close(ev._x, x[idx])
    assert torch.equal(ev._y, y[idx])
    noise = ZeroCostEvaluator(space, seed=3, proxy="naswot", batch=8, resolution=None, dataset=NOISE)
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(noise._x, torch.randn(8, 3, 32, 32, generator=g))
    assert math.isfinite(ev(space.sample(np.random.default_rng(0)))["score"])
    size_only = ZeroCostEvaluator(space, seed=3, proxy="flops")   # nothing to load for arch-only proxies
    assert size_only._x is None


# ---- the zero-cost warm-up strategy --------------------------------------------------------------
def test_zero_cost_strategy_evaluates_the_pool_best_first() -> None:
    space = tiny("mbconv")
    strat = STRATEGIES.get("zero-cost")(space, seed=4, pool=12, population=5, proxy="synflow",
                                         proxy_batch=4, progress=False)
    scores = {}

    def evaluate(arch):  # type: ignore[no-untyped-def]
        return {"score": float(len(scores))}

    trials = run_search(strat, evaluate, 8, progress=False)
    ranked = strat.ranked_pool()
    assert len(ranked) == 12 and [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert [t.arch for t in trials[:5]] == [a for a, _ in ranked[:5]]
    fresh = STRATEGIES.get("zero-cost")(space, seed=4, pool=12, population=5, proxy="synflow", proxy_batch=4)
    fresh.rebuild(trials[:3])
    assert fresh.ask() == ranked[3][0]  # resumes with the next pool arch
    with pytest.raises(UsageError, match="pool"):
        STRATEGIES.get("zero-cost")(space, pool=0)
