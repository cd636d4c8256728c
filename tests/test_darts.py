"""DARTS on the nasnet darts variant: mixed-op search net, bilevel steps, genotype derivation."""
from __future__ import annotations

import math

import pytest
import torch

from nas.differentiable.darts import DartsConfig, DartsNet, _second_order_alpha_grad, split_half, train_darts
from nas.core.errors import UsageError
from search_spaces.catalog import get_space
from search_spaces.cell_ops import DARTS_PRIMITIVES

SPACE = get_space("nasnet", variant="darts", channels=4, cells=1, num_classes=4, resolution=16)


def tiny_data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    templates = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(99))
    templates = templates.repeat_interleave(4, 2).repeat_interleave(4, 3)
    y = torch.arange(n) % 4
    return templates[y] + 0.5 * torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)), y


def test_search_net_structure() -> None:
    torch.manual_seed(0)
    net = DartsNet(SPACE)
    assert net.alpha_normal.shape == (2 + 3 + 4 + 5, len(DARTS_PRIMITIVES)) == (14, 8)
    assert len(net.cells) == 5 and [c.reduce for c in net.cells] == [False, True, False, True, False]
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert {id(p) for p in net.arch_parameters()}.isdisjoint(id(p) for p in net.weight_parameters())
    with pytest.raises(UsageError, match="variant=darts"):
        DartsNet(get_space("nasnet"))


def test_genotype_keeps_top2_edges_and_never_none() -> None:
    torch.manual_seed(0)
    net = DartsNet(SPACE)
    op = {p: i for i, p in enumerate(DARTS_PRIMITIVES)}
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.zero_()
        a = net.alpha_normal
        # node 0 (edges 0, 1): both inputs; edge 0 has `none` strongest, its best real op is sep3x3
        a[0, op["none"]], a[0, op["sep_conv_3x3"]] = 9.0, 3.0
        a[1, op["skip_connect"]] = 2.0
        # node 1 (edges 2..4: inputs 0, 1, 2): inputs 0 and 2 win
        a[2, op["max_pool_3x3"]], a[3, op["avg_pool_3x3"]], a[4, op["dil_conv_5x5"]] = 4.0, 1.0, 5.0
        # node 2 (edges 5..8: inputs 0..3): 1 and 3
        a[6, op["sep_conv_5x5"]], a[8, op["dil_conv_3x3"]] = 4.0, 4.0
        # node 3 (edges 9..13: inputs 0..4): 4 and 2
        a[13, op["sep_conv_3x3"]], a[11, op["skip_connect"]] = 6.0, 5.0
        net.alpha_reduce.copy_(net.alpha_normal)
    normal, reduce = net.genotype()
    assert normal == [("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 0), ("dil_conv_5x5", 2),
                      ("sep_conv_5x5", 1), ("dil_conv_3x3", 3), ("skip_connect", 2), ("sep_conv_3x3", 4)]
    assert reduce == normal
    arch = net.derive()
    assert arch == SPACE.from_genotype(normal, reduce)
    assert SPACE.validate(arch) == arch and "none" not in SPACE.format(arch)
    full = get_space("nasnet", variant="darts")
    assert net.derive(full).genes == arch.genes       # the same genotype is an arch of the full-size space


def test_first_order_training_moves_alphas_and_derives_valid_arch() -> None:
    torch.manual_seed(0)
    net = DartsNet(SPACE)
    before = [a.detach().clone() for a in net.arch_parameters()]
    w_half, a_half = split_half(tiny_data(32), seed=0)
    assert len(w_half[1]) == len(a_half[1]) == 16
    hist = train_darts(net, w_half, a_half, DartsConfig(epochs=2, batch_size=8, arch_lr=0.05), val=tiny_data(8))
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist) and 0 <= hist[-1]["val_acc"] <= 1
    assert all(not torch.equal(b, a) for b, a in zip(before, net.arch_parameters()))
    arch = net.derive()
    assert SPACE.validate(arch) == arch and SPACE.parse(hist[-1]["arch"]) == arch


def test_second_order_gradient_restores_weights() -> None:
    torch.manual_seed(0)
    net = DartsNet(SPACE)
    net.train()
    (xt, yt), (xv, yv) = split_half(tiny_data(16), seed=1)
    weights = [p.detach().clone() for p in net.weight_parameters()]
    _second_order_alpha_grad(net, xt, yt, xv, yv, xi=0.025, wd=3e-4)
    assert all(torch.equal(w, p) for w, p in zip(weights, net.weight_parameters()))
    second = [a.grad.clone() for a in net.arch_parameters()]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in second)
    for a in net.arch_parameters():
        a.grad = None
    torch.nn.functional.cross_entropy(net(xv), yv).backward(inputs=net.arch_parameters())
    first = [a.grad for a in net.arch_parameters()]
    assert any(not torch.allclose(f, s) for f, s in zip(first, second))
    hist = train_darts(net, (xt, yt), (xv, yv), DartsConfig(epochs=1, batch_size=8, order=2))
    assert math.isfinite(hist[0]["loss"])
    with pytest.raises(UsageError, match="order must be 1"):
        DartsConfig(order=3)


def test_darts_search_flow_on_pixel1_and_cpu(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`nas search --space nasnet -o variant=darts --strategy darts --target pixel1 --target cpu`: the
    shipped tables (no profiling: NAS_AUTO_PROFILE=0), a number for both targets, and a summary that
    says what scored the derived cell (not the --evaluator default, which darts does not use)."""
    import latency.profile
    from latency import host_tables
    from latency.targets import TABLES, lut_model
    from latency.table import LatencyTable
    from nas import SearchConfig, search
    epyc = LatencyTable.load(TABLES / "amd-epyc" / "nasnet-3acae496.json").metadata
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))   # empty: cpu is the shipped EPYC table
    monkeypatch.setattr(latency.profile, "cpu_model", lambda: epyc["cpu"])
    monkeypatch.setattr(host_tables, "runtime_version", lambda: epyc["runtime_version"])
    opts = {"epochs": 1, "dataset": "synthetic:24", "batch_size": 12, "channels": 4, "resolution": 16,
            "retrain_epochs": 1}
    cfg = SearchConfig(space="nasnet", space_options={"variant": "darts"}, targets=("pixel1", "cpu"), strategy="darts",
                       strategy_options=opts, trials=20, seed=0, out=str(tmp_path / "run"))
    result = search(cfg, progress=False)
    s = result.summary
    space = get_space("nasnet", variant="darts")
    assert s["trials"] == 1 and space.parse(s["arch"]) == result.best.arch
    assert s["training"]["derived"] == s["arch"] and len(s["training"]["genotype"]["normal"]) == 8
    assert s["training"]["train_space"]["channels"] == 4 and 0 <= s["metrics"]["accuracy"] <= 1
    assert s["exports"]["max_abs_diff_vs_torch"] < 1e-4 and (tmp_path / "run" / "subnet.pt").is_file()
    by_target = s["latency_ms_by_target"]
    assert by_target == pytest.approx({t: lut_model(t, space).predict(result.best.arch) for t in ("pixel1", "cpu")})
    assert 20 < by_target["pixel1"] < 300 and 0.5 < by_target["cpu"] < 20
    assert s["evaluator"] == "retrain" and s["score_is"] == (
        "held-out accuracy after training from scratch, 1 epochs at proxy size channels=4, cells=1, resolution=16")


def test_search_cells_use_non_affine_batch_norm() -> None:
    """As in DARTS' search model: no BN scale/shift inside the cells (they could undo the alphas); the
    stem keeps its affine BN. Trained weights do not change that: in train mode every parametric op's
    output stays normalised per channel, so its share of a mixed edge is set by the alphas alone."""
    torch.manual_seed(0)
    net = DartsNet(SPACE)
    cell_bns = [m for m in net.cells.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert cell_bns and not any(m.affine for m in cell_bns)
    assert any(m.affine for m in net.stem.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert [n for n, p in net.cells.named_parameters() if p.ndim == 1] == []   # only conv kernels in cells
    w_half, a_half = split_half(tiny_data(32), seed=0)
    train_darts(net, w_half, a_half, DartsConfig(epochs=1, batch_size=8, arch_lr=0.05))
    net.train()
    x = torch.randn(8, 4, 16, 16)
    mixed = net.cells[0].edges[0]
    for prim, op in zip(DARTS_PRIMITIVES, mixed.ops):
        if prim in ("none", "skip_connect"):
            continue
        y = op(x)
        torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(y.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), torch.ones(y.shape[1]), atol=2e-3, rtol=0)


@pytest.fixture
def bar_postfixes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What every progress bar would draw at each step: its postfix when `update` runs (the trainers
    import tqdm when they run, so patching the module's class reaches them)."""
    import tqdm
    seen: list[str] = []

    class Recording(tqdm.tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            seen.append(str(self.postfix))
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Recording)
    return seen


def test_progress_bars_show_the_current_running_loss(bar_postfixes: list[str]) -> None:
    """Each step draws the running mean loss of the epoch so far, ending at the epoch's loss - not the
    step before's loss (DARTS, supernet) nor the previous epoch's (short training)."""
    from nas.training.loops import train_eval
    torch.manual_seed(0)
    w_half, a_half = split_half(tiny_data(32), seed=0)      # 16 weight samples, batch 8: 2 steps per epoch
    hist = train_darts(DartsNet(SPACE), w_half, a_half, DartsConfig(epochs=2, batch_size=8), progress=True)
    assert len(bar_postfixes) == 4
    assert [bar_postfixes[1], bar_postfixes[3]] == [f"loss={h['loss']:.3f}" for h in hist]
    assert bar_postfixes[0] != bar_postfixes[1] and all(p.startswith("loss=") for p in bar_postfixes)
    bar_postfixes.clear()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    out = train_eval(model, tiny_data(32), tiny_data(8), epochs=2, batch_size=8, progress=True)
    assert len(bar_postfixes) == 8 and bar_postfixes[-1] == f"loss={out['train_loss']:.3f}"
    assert bar_postfixes[0].startswith("loss=") and len(set(bar_postfixes[:4])) == 4
