"""Single-Path NAS: gated superkernel = derived subnet, differentiable LUT latency, lambda / target effect."""
from __future__ import annotations

import math

import pytest
import torch

from latency.targets import lut_model
from nas.differentiable.single_path import (
    LatencyTerm,
    SinglePathConfig,
    SinglePathNet,
    indicator,
    latency_penalty,
    train_single_path,
)
from nas.differentiable.single_path_repair import repair
from nas.core.errors import UsageError
from search_spaces.catalog import get_space

FULL = get_space("mbconv")
SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=4)


@pytest.fixture(scope="module")
def lut():  # type: ignore[no-untyped-def]
    return lut_model("pixel1", FULL)


def tiny_data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    templates = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(99))
    templates = templates.repeat_interleave(8, 2).repeat_interleave(8, 3)
    y = torch.arange(n) % 4
    return templates[y] + 0.5 * torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), y


def random_thresholds(net: SinglePathNet, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gates in net.gates:
            for p in (gates.t_k, gates.t_e, gates.t_s):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


def test_gated_superkernel_computes_the_derived_subnet() -> None:
    torch.manual_seed(0)
    net = SinglePathNet(SPACE)
    random_thresholds(net, 1)
    net.train()
    net(torch.randn(8, 3, 32, 32))          # non-trivial BN statistics
    net.eval()
    arch = net.derive()
    assert "skip" in arch.genes and len(set(arch.genes)) > 2   # the thresholds picked a mixed arch
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        gated = net(x)
        model = SPACE.build(arch)
        model.load_state_dict(net.extract(arch))
        torch.testing.assert_close(model.eval()(x), gated, atol=1e-5, rtol=1e-5)
        net.relaxed = False
        net.set_arch(arch)
        torch.testing.assert_close(net(x), gated, atol=1e-5, rtol=1e-5)


def test_initial_thresholds_open_every_gate() -> None:
    net = SinglePathNet(SPACE, t_init=0.5)
    assert net.derive() == net.largest()
    net = SinglePathNet(SPACE, t_init=1.5)
    assert net.derive() == net.smallest()


#: thresholds (kernel ring, expansion, skip) in units of the initial norms: < 1 opens a gate of a fresh net
TOKEN_THRESHOLDS = {"skip": (0.5, 0.5, 1.5), "k3e3": (1.5, 1.5, 0.5), "k3e6": (1.5, 0.5, 0.5),
                    "k5e3": (0.5, 1.5, 0.5), "k5e6": (0.5, 0.5, 0.5)}


@pytest.mark.parametrize("token", sorted(TOKEN_THRESHOLDS))
def test_every_token_is_reachable_from_a_fresh_net(token: str) -> None:
    """Each gate is independent: closing the 5x5 ring keeps e6 and the residual branch (k3e6 on every
    layer, k3 on skippable ones), closing e6 keeps k5, and only the skip gate gives skip."""
    torch.manual_seed(0)
    net = SinglePathNet(SPACE)
    tk, te, ts = TOKEN_THRESHOLDS[token]
    with torch.no_grad():
        for gates in net.gates:
            gates.t_k.fill_(tk)
            gates.t_e.fill_(te)
            gates.t_s.fill_(ts)
    genes = net.derive().genes
    skippable = [i for i, d in enumerate(SPACE.decisions) if "skip" in d.choices]
    layers = skippable if token == "skip" else range(len(genes))
    assert {genes[i] for i in layers} == {token}
    if token == "skip":   # the first layer of a stage cannot skip: its kernel and expansion stay open
        assert {genes[i] for i in range(len(genes)) if i not in skippable} == {"k5e6"}


def test_closing_a_ring_leaves_expansion_and_skip_norms_at_their_start() -> None:
    torch.manual_seed(0)
    net = SinglePathNet(SPACE)
    with torch.no_grad():
        for gates, block in zip(net.gates, net.blocks):
            gates.t_k.fill_(1.5)
            mk, me, ms = gates.margins(block.dw.weight, net.tau)
            assert float(mk.max()) < 0                                  # ring closed
            torch.testing.assert_close(me + gates.t_e, torch.ones_like(me))   # expansion norm = initial
            torch.testing.assert_close(ms + gates.t_s, torch.ones_like(ms))   # skip norm = initial


def test_latency_term_equals_lut_and_is_differentiable(lut) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = SinglePathNet(SPACE)
    random_thresholds(net, 2)
    term = LatencyTerm.from_lut(SPACE, lut)
    ind = net.indicators()
    lat = term(ind)
    arch = FULL.make(net.derive().genes)
    assert float(lat.detach()) == pytest.approx(lut.predict(arch), rel=1e-5)
    lat.backward()
    grads = [float(g) for gates in net.gates for p in (gates.t_k, gates.t_e, gates.t_s) if p.grad is not None
             for g in p.grad]
    assert all(math.isfinite(g) for g in grads) and all(g <= 0 for g in grads) and min(grads) < 0
    # the skip gate of layer 1: d lat / d t_s = -(R_active - R_skip) * sigmoid'(m / tau) / tau
    i = 1
    gates, block = net.gates[i], net.blocks[i]
    mk, me, ms = gates.margins(block.dw.weight, net.tau)
    tok = arch.genes[i] if arch.genes[i] != "skip" else None
    active = FULL.make(arch.genes[:i] + (tok or _open_token(mk, me),) + arch.genes[i + 1:])
    skipped = FULL.make(arch.genes[:i] + ("skip",) + arch.genes[i + 1:])
    s = torch.sigmoid(ms.detach()[0] / net.tau)
    expected = -(lut.predict(active) - lut.predict(skipped)) * float(s * (1 - s)) / net.tau
    assert float(gates.t_s.grad[0]) == pytest.approx(expected, rel=1e-4)


def _open_token(mk: torch.Tensor, me: torch.Tensor) -> str:
    return f"k{5 if float(mk[0].detach()) > 0 else 3}e{6 if float(me[0].detach()) > 0 else 3}"


def test_nested_gate_probabilities() -> None:
    torch.testing.assert_close(LatencyTerm._probs(torch.tensor([1.0, 0.0])), torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(LatencyTerm._probs(torch.tensor([0.5, 0.5])), torch.tensor([0.5, 0.25, 0.25]))
    x = torch.tensor([0.3, -0.2], requires_grad=True)
    ind = indicator(x, 0.25)
    assert ind.tolist() == [1.0, 0.0]
    ind.sum().backward()
    assert torch.all(x.grad > 0)


def test_target_penalty_is_a_hinge_on_log_latency() -> None:
    lat = torch.tensor(50.0)
    assert float(latency_penalty(lat, SinglePathConfig(lam=2.0, latency_ms=60.0))) == 0.0
    assert float(latency_penalty(lat, SinglePathConfig(lam=2.0, latency_ms=40.0))) == pytest.approx(2 * math.log(1.25))
    assert float(latency_penalty(lat, SinglePathConfig(lam=2.0))) == pytest.approx(2 * math.log(50.0))


def _search(lut, lam: float, target: float | None = None, steps: int = 8) -> float:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = SinglePathNet(SPACE)
    x, y = tiny_data(16)
    cfg = SinglePathConfig(epochs=steps, batch_size=16, lam=lam, latency_ms=target, arch_lr=1.0, seed=0)
    hist = train_single_path(net, (x, y), LatencyTerm.from_lut(SPACE, lut), cfg)
    assert len(hist) == steps and all(math.isfinite(h["ce"]) for h in hist)
    return lut.predict(FULL.make(net.derive().genes))


def test_stronger_lambda_and_tighter_target_give_faster_nets(lut) -> None:  # type: ignore[no-untyped-def]
    free, strong = _search(lut, 0.0), _search(lut, 5.0)
    assert strong < 0.8 * free, (free, strong)
    loose, tight = _search(lut, 5.0, target=110.0), _search(lut, 5.0, target=50.0)
    assert tight < loose <= 110.0 and tight <= 50.0, (loose, tight)


def test_repair_closes_least_certain_gates_until_under_bound(lut) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = SinglePathNet(SPACE)
    arch = net.derive()                     # the largest net, ~129 ms on pixel1
    fixed = repair(net, arch, lambda a: lut.predict(FULL.make(a.genes)), 60.0)
    assert lut.predict(FULL.make(fixed.genes)) <= 60.0 < lut.predict(FULL.make(arch.genes))


def test_config_and_space_errors() -> None:
    with pytest.raises(UsageError, match="expansions > 1"):
        SinglePathNet(get_space("mbconv", resolution=32, width_mult=0.25, expansions=(1, 6)))
    with pytest.raises(UsageError, match="lam must be >= 0"):
        SinglePathConfig(lam=-1.0)
    with pytest.raises(UsageError, match="target must be positive"):
        SinglePathConfig(latency_ms=0.0)


def test_single_path_search_meets_latency_bound(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas import SearchConfig, search
    opts = {"epochs": 1, "dataset": "synthetic:24", "batch_size": 12, "calib_batches": 1}
    cfg = SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(45.0,), strategy="single-path",
                       strategy_options=opts, trials=50, seed=0, out=str(tmp_path))
    s = search(cfg, progress=False).summary
    # one trial, plus the unconstrained derived arch when the bound changed it (scored for comparison)
    proj = s["training"]["projection"]
    assert s["trials"] == 1 + bool(proj["changed"]) and s["latency_ms"] <= 45.0
    assert s["budget"]["all_met"] and proj["projected_values"]["latency_ms.pixel1"] == pytest.approx(s["latency_ms"])
    assert s["training"]["config"]["latency_ms"] == 45.0 and len(s["training"]["history"]) == 1
    assert s["exports"]["max_abs_diff_vs_torch"] < 1e-4 and (tmp_path / "subnet.onnx").is_file()
    assert 0.0 <= s["metrics"]["accuracy"] <= 1.0
