"""The nb201 and nats_sss benchmark spaces against the published ground truth they come with.

Reference values: NASLib's `params` / `flops` scores and validation accuracies of 725 NAS-Bench-201
archs (zc_nasbench201.json), the 15,625 NAS-Bench-201 strings of the HELP / HW-NAS-Bench latency
file, and the 32,768 NATS size-space accuracies (range 79.79-93.65 in the data README).
"""
from __future__ import annotations

import numpy as np
import pytest

from nas.core.errors import ArchError
from latency import bench_devices
from search_spaces import bench_data
from search_spaces.catalog import get_space
from search_spaces.nb201 import live_edges, parse_cell
from search_spaces.nb201_ops import naslib_flops

#: dataset -> (classes, input resolution) of the benchmark's nets
DATASET_NETS = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}


def test_naslib_edge_order_puts_chance_accuracy_exactly_on_disconnected_cells() -> None:
    """NASLib keys list edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4); read that way, the only archs
    at chance accuracy are those whose output has no path from the input. Reading the key in the
    NAS-Bench-201 string's own order instead puts 88.76%-accurate archs among the disconnected."""
    recs = bench_data.nb201_records("cifar10")
    connected = {a: any(live_edges(parse_cell(a))) for a in recs}
    dead = [r.val_accuracy for a, r in recs.items() if not connected[a]]
    alive = [r.val_accuracy for a, r in recs.items() if connected[a]]
    assert dead == [10.0] and min(alive) > 30.0
    # the wrong reading: op codes taken in string order
    import ast
    raw = bench_data._zc_json(bench_data.NB201_ZC)["cifar10"]
    wrong_dead = [v["val_accuracy"] for k, v in raw.items()
                  if not any(live_edges(tuple(bench_data.NASLIB_OPS[c] for c in ast.literal_eval(k))))]
    assert max(wrong_dead) > 80.0


def _check_params(dataset: str, every: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from torch.nn.modules import batchnorm, conv
    # count shapes only: skip weight initialisation (most of the build time); counts are unchanged
    monkeypatch.setattr(conv._ConvNd, "reset_parameters", lambda self: None)
    monkeypatch.setattr(batchnorm._NormBase, "reset_parameters", lambda self: None)
    classes, res = DATASET_NETS[dataset]
    space = get_space("nb201", num_classes=classes, resolution=res)
    recs = bench_data.nb201_records(dataset)
    assert len(recs) == (724 if dataset == "ImageNet16-120" else 725)
    for block, rec in list(recs.items())[::every]:
        with torch.device("meta"):   # shapes only: no weight init, ~10x faster
            net = space.build(space.parse(block))
        params = sum(p.numel() for p in net.parameters())
        assert params == round(rec.scores["params"] * 1e6), block


def test_params_equal_naslib_for_every_cifar10_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    _check_params("cifar10", 1, monkeypatch)


@pytest.mark.parametrize("dataset", ["cifar100", "ImageNet16-120"])
def test_params_equal_naslib_other_datasets_sample(dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_params(dataset, 9, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar100", "ImageNet16-120"])
def test_params_equal_naslib_for_every_arch_other_datasets(dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_params(dataset, 1, monkeypatch)


@pytest.mark.parametrize("dataset", list(DATASET_NETS))
def test_flops_equal_naslib_for_every_arch(dataset: str) -> None:
    """`naslib_flops` equals NASLib's `flops` score (MFLOPs, rounded to whole FLOPs) for every arch of
    the file: 725 on cifar10 / cifar100, 724 on ImageNet16-120. Before the global-pool term of the
    torchstat convention was counted, every arch was short by 5,184 (32x32) or 1,600 (16x16)."""
    classes, res = DATASET_NETS[dataset]
    space = get_space("nb201", num_classes=classes, resolution=res)
    recs = bench_data.nb201_records(dataset)
    assert len(recs) == (724 if dataset == "ImageNet16-120" else 725)
    wrong = {b: (round(rec.scores["flops"] * 1e6), naslib_flops(space.layers(space.parse(b))))
             for b, rec in recs.items()}
    wrong = {b: v for b, v in wrong.items() if v[0] != v[1]}
    assert not wrong, f"{len(wrong)} archs differ, e.g. {next(iter(wrong.items()))}"


def _torchstat_flops(net: "torch.nn.Module", res: int) -> int:
    """The torchstat convention (see `naslib_flops`), counted by forward hooks on the leaf modules of
    the built net (meta tensors: shapes only): an independent path to the same number."""
    import torch
    from torch import nn
    total = [0]

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        x = inp[0]
        n_in, n_out = x.numel(), out.numel()
        if isinstance(m, nn.Conv2d):
            total[0] += n_out * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            total[0] += n_out if m.bias is not None else 0
        elif isinstance(m, nn.BatchNorm2d):
            total[0] += n_in * (2 if m.affine else 1)
        elif isinstance(m, nn.ReLU):
            total[0] += n_in
        elif isinstance(m, nn.AvgPool2d):
            total[0] += n_out * m.kernel_size * m.kernel_size
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            assert out.shape[-2:] == (1, 1)
            total[0] += x.shape[1] * (x.shape[2] + 1) * (x.shape[3] + 1)
        elif isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        net(torch.zeros(1, 3, res, res, device="meta"))
    for h in handles:
        h.remove()
    return total[0]


@pytest.mark.parametrize("dataset", ["cifar10", "ImageNet16-120"])
def test_flops_counted_on_the_built_net_agree(dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from torch.nn.modules import batchnorm, conv
    monkeypatch.setattr(conv._ConvNd, "reset_parameters", lambda self: None)
    monkeypatch.setattr(batchnorm._NormBase, "reset_parameters", lambda self: None)
    classes, res = DATASET_NETS[dataset]
    space = get_space("nb201", num_classes=classes, resolution=res)
    recs = bench_data.nb201_records(dataset)
    for block, rec in list(recs.items())[::60]:
        arch = space.parse(block)
        with torch.device("meta"):
            net = space.build(arch)
        assert _torchstat_flops(net, res) == naslib_flops(space.layers(arch)) == round(rec.scores["flops"] * 1e6)


def test_every_benchmark_string_round_trips() -> None:
    space = get_space("nb201")
    blocks = list(bench_devices.nb201_latency().index)
    assert len(blocks) == 15625 and len(set(blocks)) == 15625
    archs = {space.parse(b) for b in blocks}
    assert len(archs) == 15625 and all(space.format(space.parse(b)) == b for b in blocks[:500])


def test_nb201_block_string_errors_name_the_bad_part() -> None:
    space = get_space("nb201")
    with pytest.raises(ArchError, match="bad op 'conv_5x5'.*valid ops: none, skip_connect"):
        space.parse("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ArchError, match="bad input"):
        space.parse("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ArchError, match="needs 3 nodes"):
        space.parse("|none~0|")


def test_candidate_list_restricts_sample_and_mutate(tmp_path) -> None:
    space = get_space("nb201", candidates="naslib")
    truth = set(bench_data.nb201_records("ImageNet16-120"))
    assert space.size() == 724
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    for _ in range(100):
        child = space.mutate(arch, rng)
        assert child != arch and space.format(child) in truth
        arch = child
    with pytest.raises(ArchError, match="not in the candidate list"):
        space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    f = tmp_path / "c.txt"
    f.write_text("# two archs\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\nnb201-best\n")
    small = get_space("nb201", candidates=str(f))
    assert {small.format(small.sample(np.random.default_rng(s))) for s in range(20)} == \
        {"|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", small.presets["nb201-best"]}
    # the candidate list does not change the nets: the shipped tables still apply
    from latency.targets import lut_model
    assert lut_model("pixel1", small).predict(small.parse_any("nb201-best")) == \
        lut_model("pixel1", get_space("nb201")).predict(get_space("nb201").parse_any("nb201-best"))


def test_nats_sss_covers_the_benchmark() -> None:
    space = get_space("nats_sss")
    acc = bench_data.nats_sss_accuracy()
    assert len(acc) == 32768 == space.size()
    assert min(acc.values()) == 79.79 and max(acc.values()) == 93.65
    assert all(space.format(space.parse(b)) == b for b in list(acc)[::97])
    with pytest.raises(ArchError, match="bad value '12'; valid widths: 8, 16"):
        space.parse("12:16:24:32:64")


def test_nats_sss_net_shapes_follow_the_widths() -> None:
    """Cell 2 maps c2 -> c3 (its input edges change width); params grow with every width."""
    import torch
    space = get_space("nats_sss")
    net = space.build(space.parse("8:16:24:32:40")).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    count = lambda text: sum(p.numel() for p in space.build(space.parse(text)).parameters())  # noqa: E731
    base = count("16:16:16:16:16")
    for i in range(5):
        widths = ["16"] * 5
        widths[i] = "24"
        assert count(":".join(widths)) > base
