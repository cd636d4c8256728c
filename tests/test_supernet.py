"""Weight-sharing MBConv supernet: path extraction, sandwich training, BN recalibration, evaluator, flow."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.core.errors import UsageError
from nas.evaluators.catalog import EVALUATORS
from nas.supernet import build_supernet, training_space
from nas.supernet.mbconv import MBConvSupernet
from nas.supernet.trainer import (
    SandwichConfig,
    SupernetEvaluator,
    calibration_set,
    count_params,
    recalibrate_bn,
    sandwich_step,
    train_supernet,
)
from search_spaces.catalog import get_space
from search_spaces.ops import layer_macs

SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=4)


def tiny_data(n: int = 48, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable images: a fixed coarse template per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, 3, 4, 4, generator=torch.Generator().manual_seed(99))
    templates = templates.repeat_interleave(8, 2).repeat_interleave(8, 3)
    y = torch.arange(n) % classes
    return templates[y] + 0.5 * torch.randn(n, 3, 32, 32, generator=g), y


def warmed(space, resolution: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """The space's supernet with its shared BN statistics moved off their initial values (a few
    training-mode passes on random paths), in eval mode."""
    torch.manual_seed(seed)
    net = build_supernet(space)
    rng = np.random.default_rng(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net.set_arch(space.sample(rng))
            net(torch.randn(8, 3, resolution, resolution))
    return net.eval()


def warmed_supernet(seed: int = 0) -> MBConvSupernet:
    return warmed(SPACE, 32, seed)


def test_extracted_subnet_equals_supernet_path() -> None:
    net = warmed_supernet()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(5)
    for arch in [net.largest(), net.smallest()] + [SPACE.sample(rng) for _ in range(3)]:
        net.set_arch(arch)
        model = SPACE.build(arch)
        model.load_state_dict(net.extract(arch))   # strict: every key of the standalone net is filled
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), net(x), atol=1e-5, rtol=1e-5)
    assert net.arch == arch


def test_kernels_and_expansions_are_shared_slices() -> None:
    net = warmed_supernet()
    arch = SPACE.parse("k3e3 k5e6 skip skip | k3e6 skip skip skip | k5e3 skip skip skip | k3e3 skip skip skip | "
                       "k3e3 skip skip skip | k3e3")
    state = net.extract(arch)
    block = net.blocks[0]
    mid = block.cin * 3
    # layer 0 (k3e3) is standalone index 2: its depthwise kernel is the centre 3x3 of the 5x5
    torch.testing.assert_close(state["2.pre.3.weight"], block.dw.weight[:mid, :, 1:4, 1:4])
    torch.testing.assert_close(state["2.pre.0.weight"], block.expand.weight[:mid])
    torch.testing.assert_close(state["2.pre.4.running_mean"], block.bn2.running_mean[:mid])
    assert state["3.pre.3.weight"].shape[-1] == 5 and state["3.pre.0.weight"].shape[0] == net.blocks[1].cin * 6


def test_sliced_batchnorm_updates_only_the_path_channels() -> None:
    torch.manual_seed(0)
    net = build_supernet(SPACE)
    arch = SPACE.parse("k3e3 " * 4 + "| " + " | ".join(["k3e3 k3e3 k3e3 k3e3"] * 4) + " | k3e3")
    net.set_arch(arch)
    net.train()
    net(torch.randn(8, 3, 32, 32) + 3.0)
    bn = net.blocks[0].bn1
    mid = net.blocks[0].cin * 3
    assert bn.running_mean[:mid].abs().sum() > 0
    assert torch.all(bn.running_mean[mid:] == 0) and torch.all(bn.running_var[mid:] == 1)


def test_sandwich_training_reduces_loss() -> None:
    torch.manual_seed(0)
    net = build_supernet(SPACE)
    x, y = tiny_data(16)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    losses = [sandwich_step(net, opt, x, y, [net.largest(), net.smallest(), SPACE.sample(rng)])
              for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_recalibration_is_deterministic_and_evaluator_reports_metrics() -> None:
    torch.manual_seed(0)
    net = build_supernet(SPACE)
    x, y = tiny_data(32)
    history = train_supernet(net, (x, y), SandwichConfig(epochs=2, batch_size=16, random_paths=1), val=(x, y),
                             calib_batches=2)
    assert [h["epoch"] for h in history] == [1, 2] and 0 <= history[-1]["val_acc_largest"] <= 1
    full = get_space("mbconv", num_classes=4)
    ev = SupernetEvaluator(net, calibration_set(x, 0), (x, y), calib_batches=2, batch_size=16, report_space=full)
    arch = SPACE.sample(np.random.default_rng(3))
    first, second = ev(arch), ev(arch)
    assert first == second
    assert first["score"] == first["accuracy"] and 0 <= first["accuracy"] <= 1
    assert first["params_m"] == pytest.approx(sum(p.numel() for p in full.build(arch).parameters()) / 1e6)
    assert count_params(SPACE, arch) == sum(p.numel() for p in SPACE.build(arch).parameters())


def test_recalibrate_bn_restores_momentum_and_eval_mode() -> None:
    net = warmed_supernet()
    recalibrate_bn(net, torch.randn(16, 3, 32, 32), batches=2, batch_size=8)
    assert not net.training
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(UsageError, match="at least 1 batch"):
        recalibrate_bn(net, torch.randn(4, 3, 32, 32), batches=0)


def test_inherited_weights_export_to_onnx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas.deploy.export import export_onnx, export_torch, load_torch
    net = warmed_supernet()
    arch = SPACE.sample(np.random.default_rng(11))
    state = net.extract(arch)
    _, diff = export_onnx(SPACE, arch, tmp_path / "sub.onnx", state=state)
    assert diff < 1e-4 and (tmp_path / "sub.onnx").stat().st_size > 0
    export_torch(SPACE, arch, tmp_path / "sub.pt", state=state)
    _, back, model = load_torch(tmp_path / "sub.pt")
    net.set_arch(arch)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), atol=1e-5, rtol=1e-5)
    assert back == arch


def test_training_space_keeps_decisions_and_registry_errors() -> None:
    full = get_space("mbconv")
    small = training_space(full, resolution=32, width_mult=0.25, num_classes=10, channels=8)  # channels: ignored
    assert small.options()["resolution"] == 32 and small.decisions == full.decisions
    assert training_space(full) is full
    from types import SimpleNamespace
    with pytest.raises(UsageError, match="space 'toy' has no weight-sharing supernet; spaces with one: .*mbconv.*nb201"):
        build_supernet(SimpleNamespace(name="toy"))  # type: ignore[arg-type]   # every shipped space has one now
    assert "supernet" in EVALUATORS.names()
    with pytest.raises(UsageError, match="checkpoint=PATH"):
        EVALUATORS.get("supernet")(full, seed=0)
    with pytest.raises(UsageError, match="random_paths"):
        SandwichConfig(random_paths=-1)


def test_supernet_search_end_to_end_with_resume(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas import SearchConfig, search
    opts = {"epochs": 1, "dataset": "synthetic:24", "batch_size": 16, "random_paths": 1, "calib_batches": 1,
            "population": 3, "sample_size": 2}
    cfg = SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(60.0,), strategy="supernet",
                       strategy_options=opts, trials=4, seed=0, out=str(tmp_path))
    result = search(cfg, progress=False)
    s = result.summary
    assert len(result.trials) == 4 and s["latency_ms"] <= 60.0
    assert s["training"]["train_space"]["resolution"] == 32 and s["training"]["checkpoint"].endswith("supernet.pt")
    assert s["exports"]["max_abs_diff_vs_torch"] < 1e-4
    assert (tmp_path / "subnet.onnx").is_file() and (tmp_path / "subnet.pt").is_file()
    assert json.loads((tmp_path / "best.json").read_text())["arch"] == s["arch"]
    # the subnet files hold proxy-size weights (32 px) while latency is for the searched 224 px net: said so
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["exports"]["trained_at"]["resolution"] == {"trained": 32, "searched": 224}
    assert "proxy size" in best["exports"]["note"] and "nas train" in best["exports"]["note"]
    again = search(SearchConfig(**{**cfg.__dict__, "trials": 5}), progress=False)
    assert again.summary["training"]["reused"] is True and len(again.trials) == 5
    assert [t.arch for t in again.trials[:4]] == [t.arch for t in result.trials]


# ---- ViT-ResNAS --------------------------------------------------------------------------------
VIT = get_space("vit_resnas", resolution=16, patch=4, num_classes=4, stem="conv", widths=[[8, 16], [16, 24]],
                heads=[[1, 2], [1, 2]], head_dims=[8, 8], mlp=[[16, 32], [32, 48]], depths=[[1, 2], [1, 2]])


@pytest.mark.parametrize("stem", ["conv", "linear"])
def test_vit_resnas_subnets_inherit_leading_slices(stem: str) -> None:
    space = get_space("vit_resnas", **{**VIT.options(), "stem": stem})
    torch.manual_seed(0)
    net = build_supernet(space)
    rng = np.random.default_rng(0)
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, 16, 16))   # conv-stem BN statistics
    net.eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for arch in [net.largest(), net.smallest()] + [space.sample(rng) for _ in range(3)]:
        net.set_arch(arch)
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), net(x), atol=1e-5, rtol=1e-5)
    assert space.format(net.smallest()) == "s1: d1 w8 | h1m16 || s2: d1 w16 | h1m32"


def test_vit_resnas_supernet_trains_and_exports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas.deploy.export import export_onnx
    torch.manual_seed(0)
    net = build_supernet(VIT)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 16, 16, generator=g), torch.arange(16) % 4
    x = x + y.view(-1, 1, 1, 1).float()          # separable classes
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    losses = [sandwich_step(net, opt, x, y, [net.largest(), net.smallest(), VIT.sample(rng)]) for _ in range(10)]
    assert losses[-1] < 0.7 * losses[0], losses
    arch = VIT.sample(rng)
    net.set_arch(arch)
    recalibrate_bn(net, x, batches=2, batch_size=8)
    _, diff = export_onnx(VIT, arch, tmp_path / "vit.onnx", state=net.extract(arch))
    assert diff < 1e-4


# ---- HyTra fabric ------------------------------------------------------------------------------
HYTRA = get_space("hytra", resolution=32, num_classes=4, width=8, depth=4, head_dim=8, min_scales=[0, 1, 2, 3])


def test_hytra_fabric_paths_equal_standalone_nets() -> None:
    from nas.supernet.fabric import FabricSupernet
    torch.manual_seed(0)
    net = build_supernet(HYTRA)
    assert isinstance(net, FabricSupernet)
    rng = np.random.default_rng(0)
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net.set_arch(HYTRA.sample(rng))
            net(torch.randn(4, 3, 32, 32))
    net.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    macs = {a: sum(layer_macs(s) for s in HYTRA.layers(a)) for a in [HYTRA.sample(rng) for _ in range(30)]}
    assert macs[max(macs, key=macs.get)] <= sum(layer_macs(s) for s in HYTRA.layers(net.largest()))
    assert macs[min(macs, key=macs.get)] >= sum(layer_macs(s) for s in HYTRA.layers(net.smallest()))
    outs = []
    for arch in [net.largest(), net.smallest()] + list(macs)[:3]:
        net.set_arch(arch)
        model = HYTRA.build(arch)
        model.load_state_dict(net.extract(arch))    # strict: every key filled
        with torch.no_grad():
            y = net(x)
            torch.testing.assert_close(model.eval()(x), y, atol=1e-5, rtol=1e-5)
        outs.append(y)
    assert not torch.allclose(outs[0], outs[1])       # different paths, different modules
    # the stem (position 0) is one module on every path: its weights are shared, the rest differ
    ea, eb = net.extract(net.largest()), net.extract(net.smallest())
    stem = [k for k in ea if k.startswith("0.")]
    assert stem and all(ea[k].equal(eb[k]) for k in stem)
    assert len(net.cells) == HYTRA.depth + 2 and sum(len(c) for c in net.cells) > len(net.cells)


def test_hytra_supernet_search_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas import SearchConfig, search
    opts = {"random_paths": 1, "calib_batches": 1, "population": 3, "sample_size": 2}
    from latency.devices.pixel1 import build_table
    space_opts = {k: v for k, v in HYTRA.options().items() if k not in ("resolution", "num_classes")}
    # a target needs a table for these options (no silent skip): the pixel1 device model makes one
    table = build_table(get_space("hytra", **space_opts)).save(tmp_path / "hytra-pixel1.json")
    cfg = SearchConfig(space="hytra", space_options=space_opts, targets=(str(table),), latency_ms=(), strategy="supernet",
                       strategy_options=opts, trials=4, seed=0, out=str(tmp_path), dataset="synthetic:24",
                       epochs=1, batch_size=12)
    result = search(cfg, progress=False)
    s = result.summary
    assert len(result.trials) == 4 and s["training"]["train_space"]["resolution"] == 32
    assert s["training"]["dataset"] == "synthetic:24" and s["training"]["config"]["epochs"] == 1
    assert s["exports"]["max_abs_diff_vs_torch"] < 1e-4 and (tmp_path / "subnet.onnx").is_file()
