"""The nasnet / DARTS cell supernet: exact inherited weights, one module per (edge, op), SPOS training, flow."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.core.errors import UsageError
from nas.supernet import SUPERNETS, build_supernet
from nas.supernet.cells import CellSupernet, edge_key
from nas.supernet.trainer import SandwichConfig, recalibrate_bn, train_supernet
from search_spaces.catalog import get_space
from tests.test_supernet import warmed


def tiny_space(variant: str):  # type: ignore[no-untyped-def]
    return get_space("nasnet", variant=variant, channels=4, cells=1, resolution=16, num_classes=4)


def warmed_cells(space, seed: int = 0) -> CellSupernet:  # type: ignore[no-untyped-def]
    return warmed(space, 16, seed)


@pytest.mark.parametrize("variant", ["darts", "nasnet"])
def test_extracted_net_equals_supernet_path(variant: str) -> None:
    space = tiny_space(variant)
    net = warmed_cells(space)
    assert isinstance(net, CellSupernet) and "nasnet" in SUPERNETS
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(7)
    archs = [net.largest(), net.smallest()] + [space.sample(rng) for _ in range(4)]
    archs += [space.parse(text) for text in space.presets.values()]
    for arch in archs:
        net.set_arch(arch)
        with torch.no_grad():
            ref = net(x)
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))   # strict: every key of the standalone net is filled
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), ref)          # the same ops on the same weights: bit-exact
    assert space.macs(net.largest()) > space.macs(net.smallest())


def test_one_module_per_edge_and_op_shared_across_archs() -> None:
    space = tiny_space("darts")
    net = warmed_cells(space)
    # DARTS search cell: 2+3+4+5 = 14 edges x 7 ops per cell position (5 positions at cells=1)
    assert len(net.edges) == 5 and all(len(e) == 14 * 7 for e in net.edges)
    red = " || reduce: max3x3(0)+max3x3(1) max3x3(0)+id(2) max3x3(1)+id(2) max3x3(1)+id(2)"
    # canonical strings (`format` prints them back unchanged): block 0 reads sep3x3 on input 0 in both
    a = space.parse("normal: sep3x3(0)+sep3x3(1) sep3x3(0)+sep5x5(1) dil3x3(0)+sep5x5(1) dil3x3(0)+dil5x5(2)" + red)
    b = space.parse("normal: sep3x3(0)+avg3x3(1) sep5x5(0)+sep5x5(1) dil3x3(0)+sep5x5(1) dil3x3(0)+dil5x5(2)" + red)
    assert space.format(b) == "normal: sep3x3(0)+avg3x3(1) sep5x5(0)+sep5x5(1) dil3x3(0)+sep5x5(1) " \
                              "dil3x3(0)+dil5x5(2)" + red and space.format(a).startswith("normal: sep3x3(0)+sep3x3(1) sep3x3(0)")
    sa, sb = net.extract(a), net.extract(b)
    # block 0's sep3x3 on input 0 of the first normal cell (cell position 0) is one shared module
    shared = net.edges[0][edge_key(0, 0, "sep3x3")].state_dict()
    for state in (sa, sb):
        for key, t in shared.items():
            assert torch.equal(state[f"cells.0.ops.0.{key}"], t)
    # block 1, input 0: sep3x3 in a, sep5x5 in b - each op of an edge has its own module
    assert torch.equal(sa["cells.0.ops.2.1.weight"], net.edges[0][edge_key(1, 0, "sep3x3")][1].weight)
    assert torch.equal(sb["cells.0.ops.2.1.weight"], net.edges[0][edge_key(1, 0, "sep5x5")][1].weight)


def test_nasnet_variant_has_a_head_and_preprocessing_per_concat_width() -> None:
    space = tiny_space("nasnet")
    net = warmed_cells(space)
    assert sorted(int(k) for k in net.heads) == [4 * 4 * k for k in range(1, 6)]   # c=16 after two reductions
    dup = space.parse("normal: avg3x3(0)+avg3x3(0) sep3x3(1)+id(1) sep3x3(2)+sep3x3(3) conv1x1(4)+id(0) "
                      "sep5x5(5)+max3x3(1) || reduce: sep5x5(1)+sep7x7(0) max3x3(1)+sep7x7(0) avg3x3(1)+sep5x5(0) "
                      "id(3)+avg3x3(2) sep3x3(2)+max3x3(1)")
    net.set_arch(dup)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = space.build(dup)
    model.load_state_dict(net.extract(dup))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), net(x))


def test_uniform_single_path_training_learns_and_recalibration_is_per_path() -> None:
    space = tiny_space("darts")
    torch.manual_seed(0)
    net = build_supernet(space)
    assert net.sampling == "uniform"
    g = torch.Generator().manual_seed(0)
    templates = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9)).repeat_interleave(4, 2)
    templates = templates.repeat_interleave(4, 3)
    y = torch.arange(96) % 4
    x = templates[y] + 0.3 * torch.randn(96, 3, 16, 16, generator=g)
    paths = []
    set_arch = net.set_arch
    net.set_arch = lambda arch: (paths.append(arch), set_arch(arch))[1]  # type: ignore[method-assign]
    hist = train_supernet(net, (x, y), SandwichConfig(epochs=2, batch_size=16, lr=0.05, random_paths=1, seed=0))
    del net.set_arch
    assert hist[1]["loss"] < hist[0]["loss"]   # measured 2.01 -> 1.39
    # SPOS: one uniform path per step (6 steps per epoch), never the sandwich's largest / smallest
    assert len(paths) == 12 and len(set(paths)) >= 10
    assert net.largest() not in paths and net.smallest() not in paths
    arch = space.parse(space.presets["darts-v2"])   # canonical normal block 1: sep3x3(0)+sep3x3(1)
    net.set_arch(arch)
    recalibrate_bn(net, x, batches=2, batch_size=16)
    on_path = net.edges[0][edge_key(1, 0, "sep3x3")][-1]
    off_path = net.edges[0][edge_key(1, 0, "sep5x5")][-1]
    assert int(on_path.num_batches_tracked) == 2 and int(off_path.num_batches_tracked) == 0
    assert torch.equal(off_path.running_mean, torch.zeros(4))   # reset, never fed


def test_cell_supernet_rejects_other_spaces() -> None:
    with pytest.raises(UsageError, match="nasnet space"):
        CellSupernet(get_space("nb201"))  # type: ignore[arg-type]


def test_supernet_search_on_darts_cell_space_exports_inherited_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from latency.devices.pixel1 import build_table
    from nas import SearchConfig, search
    table = build_table(get_space("nasnet", variant="darts")).save(tmp_path / "darts-pixel1.json")
    opts = {"epochs": 1, "dataset": "synthetic:48", "batch_size": 16, "channels": 4, "resolution": 16}
    cfg = SearchConfig(space="nasnet", space_options={"variant": "darts"}, targets=(str(table),), strategy="supernet",
                       strategy_options=opts, trials=3, seed=0, out=str(tmp_path / "run"))
    s = search(cfg, progress=False).summary
    space = get_space("nasnet", variant="darts")
    space.parse(s["arch"])
    assert s["trials"] == 3 and s["training"]["train_space"]["channels"] == 4
    assert s["training"]["train_space"]["cells"] == 1 and 0 <= s["metrics"]["accuracy"] <= 1
    assert s["exports"]["max_abs_diff_vs_torch"] < 1e-4 and (tmp_path / "run" / "subnet.pt").is_file()
