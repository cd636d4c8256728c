"""MeCo and SWAP (nas.evaluators.proxies) against hand-computed values on tiny nets, and their ranking
of NAS-Bench-201 archs against NASLib's ground truth; `nas bench proxies` on the DARTS space (NB301)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas.core.errors import UsageError
from nas.evaluators.proxies import meco, meco_opt, swap, swap_patterns, swap_regularised
from search_spaces import bench_data
from search_spaces.catalog import get_space


def _conv1x1(weight: list[list[float]]) -> nn.Conv2d:
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight).reshape(2, 2, 1, 1))
    return conv


def test_meco_equals_hand_computed_eigenvalues() -> None:
    """Channels a = (1, 2, 3, 4) and b = (1, 3, 2, 4) over the 4 positions have Pearson r = 4/5, so the
    first layer (identity) gives eigenvalues 1 -+ 0.8 -> 0.2; the second maps to (a, a + b), with
    r = 9 / sqrt(90), -> 1 - 9 / sqrt(90). Only the batch's first input counts."""
    net = nn.Sequential(_conv1x1([[1, 0], [0, 1]]), _conv1x1([[1, 0], [1, 1]]))
    first = torch.tensor([[[1., 2.], [3., 4.]], [[1., 3.], [2., 4.]]])
    x = torch.stack([first, torch.randn(2, 2, 2)])
    assert meco(net, x, torch.zeros(2)) == pytest.approx(0.2 + 1 - 9 / math.sqrt(90), rel=1e-9)


def test_meco_singular_and_constant_channels_add_nothing() -> None:
    conv = nn.Conv2d(1, 3, 1, bias=True)   # 3 channels, all affine in one input: rank 1 -> min eigenvalue 0
    assert meco(nn.Sequential(conv), torch.randn(1, 1, 4, 4), torch.zeros(1)) == pytest.approx(0.0, abs=1e-9)
    const = nn.Conv2d(2, 2, 1, bias=True)
    with torch.no_grad():
        const.weight.zero_()
    assert meco(nn.Sequential(const), torch.randn(1, 2, 3, 3), torch.zeros(1)) == 0.0


def _uncorrelated_channels(c: int, positions: int) -> torch.Tensor:
    """`c` channels over `positions` (a power of 2) that are pairwise uncorrelated with zero mean: rows
    1..c of the Sylvester-Hadamard matrix (row 0, the constant one, left out)."""
    h = torch.ones(1, 1)
    while h.shape[0] < positions:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    side = int(math.isqrt(positions))
    return h[1:c + 1].reshape(1, c, side, positions // side)


def test_meco_opt_grows_with_width_where_meco_does_not() -> None:
    """Uncorrelated channels: every correlation matrix is the identity (smallest eigenvalue 1), so MeCo
    gives 1 whatever the width, and MeCo_opt (8-channel groups, times channels / 8) gives channels / 8;
    fewer than 8 channels form one group (factor 1)."""
    for c, positions in ((16, 64), (32, 64), (4, 16)):
        x = _uncorrelated_channels(c, positions)
        net = nn.Sequential(nn.Conv2d(c, c, 1, bias=False))
        with torch.no_grad():
            net[0].weight.copy_(torch.eye(c).reshape(c, c, 1, 1))
        assert meco(net, x, torch.zeros(1)) == pytest.approx(1.0, rel=1e-9)
        assert meco_opt(net, x, torch.zeros(1)) == pytest.approx(c / 8 if c >= 8 else 1.0, rel=1e-9)
    # deterministic: the channel groups come from a fixed seed
    net = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1))
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert meco_opt(net, x, torch.zeros(1)) == meco_opt(net, x, torch.zeros(1))


def test_meco_opt_ranks_nats_sss_widths_the_right_way_round() -> None:
    """On the NATS size space MeCo ranks archs backwards (wider layers: lower smallest eigenvalue);
    MeCo_opt ranks them forwards. 12 archs spread over the truth's range, CIFAR-10."""
    from scipy.stats import spearmanr

    from nas.evaluators.tabular import truth_table
    from nas.evaluators.zero_cost import ZeroCostEvaluator
    table = truth_table("nats_sss", "cifar10")
    blocks = sorted(table, key=table.get)[::len(table) // 12][:12]
    space = get_space("nats_sss")
    ev = ZeroCostEvaluator(space, proxy="meco", resolution=None, dataset="digits", batch=16)
    rows = [ev.proxies(space.parse(b), ["meco", "meco_opt"]) for b in blocks]
    acc = [table[b] for b in blocks]
    rho = {n: spearmanr([r[n] for r in rows], acc)[0] for n in ("meco", "meco_opt")}
    assert rho["meco"] < 0 < 0.5 < rho["meco_opt"], rho


def test_swap_counts_distinct_unit_patterns() -> None:
    """Units' patterns over 3 samples: (1,0,1), (0,0,1), (1,1,0), (1,1,0) -> 3 distinct."""
    x = torch.tensor([[1., -1., 1., 2.], [-1., -1., 1., 2.], [1., 1., -1., -2.]])
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    assert swap(net, x, torch.zeros(3)) == 3.0


def test_swap_packs_batches_beyond_one_word() -> None:
    """70 samples: a unit on only at sample 65 and one on only at sample 3 (65 = 62 + 3: the same bit
    of the next word) are two patterns; duplicates and all-on units collapse: 3 distinct."""
    x = -torch.ones(70, 5)
    x[:, 0] = x[:, 1] = 1.0
    x[65, 2] = x[65, 4] = 1.0
    x[3, 3] = 1.0
    assert swap_patterns(nn.Sequential(nn.ReLU()), x) == 3


def test_swap_regulariser() -> None:
    assert swap_regularised(100.0, 1.5, 1.0, 0.5) == pytest.approx(100 * math.exp(-0.5))
    assert swap_regularised(100.0, 1.0, 1.0, 0.5) == 100.0


def test_meco_and_swap_rank_nb201_archs_against_ground_truth() -> None:
    """20 of NASLib's NB201 archs (every 36th), CIFAR-100 truth: both proxies rank them well (the claims
    are 0.89 MeCo / 0.90 SWAP on CIFAR-10 / -100, all archs); random scores would give about 0 +- 0.23."""
    from nas.evaluators.zero_cost import ZeroCostEvaluator
    recs = bench_data.nb201_records("cifar100")
    space = get_space("nb201", num_classes=100)
    blocks = sorted(recs)[::36]
    ev = ZeroCostEvaluator(space, proxy="meco", resolution=None, dataset="noise", batch=16)
    rows = [ev.proxies(space.parse(b), ["meco", "swap"]) for b in blocks]
    from scipy.stats import spearmanr
    acc = [recs[b].val_accuracy for b in blocks]
    rhos = {name: spearmanr([r[name] for r in rows], acc)[0] for name in ("meco", "swap")}
    print(rhos)
    assert min(rhos.values()) > 0.6, rhos


def test_zero_cost_evaluator_meco_swap_and_regularisation() -> None:
    from nas.evaluators.catalog import make_evaluator
    space = get_space("nb201")
    arch = space.sample(np.random.default_rng(0))
    out = make_evaluator("zero-cost", space, proxy="meco", resolution=32)(arch)
    assert out["score"] == out["meco"] > 0
    plain = make_evaluator("zero-cost", space, proxy="swap", resolution=32)(arch)
    reg = make_evaluator("zero-cost", space, proxy="swap", resolution=32, swap_mu="0", swap_sigma="2")(arch)
    assert reg["swap"] == plain["swap"] == plain["score"]
    assert reg["score"] == pytest.approx(plain["swap"] * math.exp(-reg["params_m"] ** 2 / 2))
    with pytest.raises(UsageError, match="swap_mu"):
        make_evaluator("zero-cost", space, proxy="swap", swap_mu="big")
    with pytest.raises(UsageError, match="regularise proxy=swap"):
        make_evaluator("zero-cost", space, proxy="meco", swap_mu=1)


def test_bench_proxies_on_nb301(capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    capsys.readouterr()
    assert main(["bench", "proxies", "--space", "nasnet", "-o", "variant=darts", "--truth", "nb301", "--archs", "5",
                 "--proxies", "params,flops", "--quiet", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["archs"] == 5 and r["space_options"]["channels"] == 32 and r["space_options"]["cells"] == 2
    assert r["proxies"]["params_naslib"]["equal_to_naslib"] == 5
    assert r["proxies"]["params"]["spearman_vs_naslib_score"] == pytest.approx(1.0)
    assert set(r["naslib"]) == set(bench_data.ZC_PROXIES)
    for bad in (["--truth", "cifar10"], ["--truth", "nb301", "-o", "variant=nasnet"]):
        code = main(["bench", "proxies", "--space", "nasnet", "-o", "variant=darts", *bad, "--archs", "3", "--quiet"]
                    if bad[-1] != "variant=nasnet" else ["bench", "proxies", "--space", "nasnet", *bad, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
