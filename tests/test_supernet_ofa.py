"""The ofa_mbv3 supernet (nas/supernet/ofa_mbv3.py): OFA's elastic kernel / expansion / depth as views of
one set of weights, inherited subnets bit-identical to stand-alone nets, memory estimate, CLI search."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.cli.main import main
from nas.strategies.base import TrainContext
from nas.strategies.catalog import STRATEGIES
from nas.supernet import build_supernet, training_space
from nas.supernet.memory import _saved_bytes, training_bytes
from search_spaces.catalog import get_space
from search_spaces.op_params import arch_params

SPACE = get_space("ofa_mbv3", resolution=32, num_classes=10)
#: skips between blocks of a stage's last two slots (the same net as with them last)
MIXED = ("k3e3 k5e4 skip k7e6 | k7e3 k3e4 k3e6 skip | k7e6 k5e6 skip k5e4 | k5e6 k5e6 k5e4 k5e4 | "
         "k5e6 k3e6 skip k3e6")


@pytest.fixture(scope="module")
def net():  # type: ignore[no-untyped-def]
    """The supernet with its shared BN statistics moved off their initial values, in eval mode."""
    torch.manual_seed(0)
    sn = build_supernet(SPACE)
    rng = np.random.default_rng(0)
    sn.train()
    with torch.no_grad():
        for _ in range(2):
            sn.set_arch(SPACE.sample(rng))
            sn(torch.randn(4, 3, 32, 32))
    return sn.eval()


def test_inherited_subnet_is_bit_identical_to_the_standalone_net(net) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(5)
    for arch in [net.largest(), net.smallest(), SPACE.parse(MIXED), SPACE.sample(rng), SPACE.sample(rng)]:
        net.set_arch(arch)
        with torch.no_grad():
            ref = net(x)
        model = SPACE.build(arch)
        model.load_state_dict(net.extract(arch))
        with torch.no_grad():
            assert torch.equal(model.eval()(x), ref), SPACE.format(arch)
        # the stand-alone net has the params the space counts (so DyNAS-T's, tests/test_ofa_mbv3.py)
        assert sum(p.numel() for p in model.parameters()) == arch_params(SPACE, arch)


def test_elastic_kernel_expansion_and_depth_are_views_of_the_largest_weights(net) -> None:  # type: ignore[no-untyped-def]
    block = net.blocks[4]   # stage 1 (40 wide, squeeze-excite), first block: cin 24, mid 144 at e6
    assert block.dw.weight.shape == (144, 1, 7, 7) and block.se_reduce.weight.shape == (40, 144, 1, 1)
    arch = SPACE.parse(MIXED)
    state = net.extract(arch)
    # stage 1's first block is k7e3: 72 channels (make_divisible(24 * 3, 8)), SE to make_divisible(72 // 4, 8) = 24
    dw = state["5.pre.3.weight"]   # layers: stem, first block, 3 blocks of stage 0, then stage 1
    assert torch.equal(dw, block.dw.weight[:72])
    assert torch.equal(state["5.se.1.weight"], block.se_reduce.weight[:24, :72])
    # stage 0's first block is k3e3 (cin 16: 48 channels): the centre 3x3 of its slot's 7x7 kernels
    assert torch.equal(state["2.pre.3.weight"], net.blocks[0].dw.weight[:48, :, 2:5, 2:5])
    # depth: the third active block of stage 0 (written in slot 3) inherits slot 2's weights, as OFA runs
    # a stage's first d blocks
    assert torch.equal(state["4.pre.0.weight"], net.blocks[2].expand.weight[:144])
    canon = SPACE.canonical(arch)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        net.set_arch(arch)
        a = net(x)
        net.set_arch(canon)
        assert torch.equal(net(x), a)
        model = SPACE.build(arch)
        model.load_state_dict(state)
        assert torch.equal(model.eval()(x), a)   # the inherited stand-alone net: bit-identical


def test_memory_estimate_counts_the_supernet_and_auto_trains_the_proxy() -> None:
    torch.manual_seed(0)
    real = build_supernet(SPACE)
    est = training_bytes(SPACE, 2)
    assert est["params"] == sum(p.numel() * 4 for p in real.parameters())
    saved = _saved_bytes(real, real.largest(), torch.randn(2, 3, 32, 32))
    assert est["activations_per_sample"] * 2 == pytest.approx(saved, rel=0.02)
    # at OFA's 224 px a batch of 64 needs about 6.7 GB; at 32 px 1.4 GB, over memory_gb=1: train_size=auto
    # falls back to the proxy (for ofa_mbv3 the proxy size is the resolution, 32) and says why
    assert training_bytes(get_space("ofa_mbv3", num_classes=10), 64)["bytes"] > 6 * 2**30
    strat = STRATEGIES.get("supernet")(SPACE, memory_gb=1.0)
    small = strat.train_space(TrainContext(space=SPACE, dataset="synthetic", batch_size=64))
    why = strat.size_info
    assert small.options() == SPACE.options()
    assert why["used"] == "proxy" and why["asked"] == "auto" and "memory_gb=1" in why["why"]
    assert why["searched_memory_estimate_gb"] == pytest.approx(training_bytes(SPACE, 64)["bytes"] / 2**30, abs=0.01)
    assert STRATEGIES.get("supernet")(SPACE).train_space(
        TrainContext(space=SPACE, dataset="synthetic", batch_size=64)) is not None


def test_cli_supernet_search_with_tiny_training(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    code = main(["search", "--space", "ofa_mbv3", "--strategy", "supernet", "--dataset", "synthetic:32",
                 "--epochs", "1", "--batch-size", "16", "--trials", "3", "--strategy-option", "random_paths=1",
                 "--strategy-option", "calib_batches=1", "--strategy-option", "population=2",
                 "--strategy-option", "sample_size=1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    best = json.loads((out / "best.json").read_text())
    arch = SPACE.parse(best["arch"]) if isinstance(best["arch"], str) else None
    assert arch is not None and (out / "supernet.pt").exists()
    assert best["training"]["train_size"]["used"] == "proxy"
