"""NASNet / DARTS cell space: canonical form, block strings, layers, published sizes, ONNX export."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from search_spaces.catalog import get_space
from search_spaces.cell_ops import DARTS_OPS, DARTS_PRIMITIVES, NASNET_OPS, build_cell_op
from search_spaces.nasnet import DARTS_PRESETS, NASNetSpace, canonical_cell
from search_spaces.ops import build_layer, layer_macs


def small(**kw: object) -> NASNetSpace:
    opts = {"channels": 8, "cells": 1, **kw}
    return get_space("nasnet", **opts)  # type: ignore[return-value]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- decisions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant, blocks, ops", [("nasnet", 5, NASNET_OPS), ("darts", 4, DARTS_OPS)])
def test_decisions_one_gene_per_choice(variant: str, blocks: int, ops: tuple[str, ...]) -> None:
    space = small(variant=variant)
    assert space.blocks == blocks and len(space.decisions) == 2 * 4 * blocks
    for j in range(blocks):
        d_in, d_op = space.decisions[4 * j], space.decisions[4 * j + 1]
        assert d_in.name == f"normal.b{j}.in_a" and d_in.choices == tuple(range(2 + j))
        assert d_op.choices == ops
    assert len(NASNET_OPS) == 13 and len(DARTS_OPS) == 7 == len(DARTS_PRIMITIVES) - 1


def test_space_size_darts_matches_formula() -> None:
    # per cell: node j picks 2 of its 2 + j predecessors and an op for each: prod C(2+j, 2) * 7^2
    per_cell = math.prod(math.comb(2 + j, 2) * 49 for j in range(4))
    assert small(variant="darts").size() == pytest.approx(per_cell ** 2)
    assert math.log10(small().size()) == pytest.approx(30.79, abs=0.01)


def test_bad_options_raise_naming_valid_choices() -> None:
    with pytest.raises(UsageError, match="'enas'.*valid: nasnet, darts"):
        get_space("nasnet", variant="enas")
    with pytest.raises(UsageError, match="blocks 0 outside"):
        get_space("nasnet", blocks=0)


# ---- presets and published sizes ---------------------------------------------------------------
def test_nasnet_a_params_close_to_published() -> None:
    # Zoph et al. 2018, Table 1: NASNet-A (6 @ 768) 3.3M params on CIFAR-10 (C=32, N=6). We get
    # 3.06M: the TF release also concatenates h[i-2] in the normal cell and block 1 in the
    # reduction cell, and counts its auxiliary head; this space concatenates unused blocks only.
    space = get_space("nasnet", channels=32, cells=6)
    n = n_params(space.build(space.parse(space.presets["nasnet-a"])))
    assert n == 3_061_738
    assert abs(n / 3.3e6 - 1) < 0.10


def test_darts_v2_params_and_macs_match_published() -> None:
    # Liu et al. 2019, Table 1: DARTS (second order) 3.3M params, 20 cells, 36 initial channels.
    space = get_space("nasnet", variant="darts", channels=36, cells=6)
    arch = space.parse(space.presets["darts-v2"])
    n = n_params(space.build(arch))
    assert n == 3_349_342 and abs(n / 3.3e6 - 1) < 0.10
    assert len([s for s in space.layers(arch) if s.op == "cell_combine"]) == 20
    assert sum(layer_macs(s) for s in space.layers(arch)) == 528_359_040


def test_presets_per_variant_and_from_genotype() -> None:
    assert set(get_space("nasnet").presets) == {"nasnet-a"}
    darts = get_space("nasnet", variant="darts")
    assert set(darts.presets) == set(DARTS_PRESETS)
    assert get_space("nasnet", blocks=4).presets == {}
    # DARTS' genotypes.DARTS_V2 in DARTS' own op names
    v2 = darts.from_genotype(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)])
    assert v2 == darts.parse_any("darts-v2")


def test_concat_rule_per_variant() -> None:
    space = get_space("nasnet")
    normal, reduce = space.split(space.parse(space.presets["nasnet-a"]).genes)
    assert space.concat(normal) == (2, 3, 4, 5, 6)       # every block reads cell inputs only
    assert len(space.concat(reduce)) == 3                 # two blocks feed later blocks
    darts = get_space("nasnet", variant="darts")
    normal, reduce = darts.split(darts.parse_any("darts-v2").genes)
    assert darts.concat(normal) == darts.concat(reduce) == (2, 3, 4, 5)


# ---- canonical form ----------------------------------------------------------------------------
def _relabel(genes: tuple, blocks: int, rng: np.random.Generator) -> list:
    """The same two cells written with a random topological block order and random pair order."""
    out: list = []
    for cell in (genes[:4 * blocks], genes[4 * blocks:]):
        bl = [cell[i:i + 4] for i in range(0, len(cell), 4)]
        order: list[int] = []
        while len(order) < blocks:
            free = [b for b in range(blocks) if b not in order
                    and all(x - 2 in order for x in (bl[b][0], bl[b][2]) if x >= 2)]
            order.append(free[rng.integers(len(free))])
        new = {old: i for i, old in enumerate(order)}
        for old in order:
            a, oa, b, ob = bl[old]
            a, b = (a if a < 2 else 2 + new[a - 2]), (b if b < 2 else 2 + new[b - 2])
            out += [b, ob, a, oa] if rng.random() < 0.5 else [a, oa, b, ob]
    return out


@pytest.mark.parametrize("variant", ["nasnet", "darts"])
def test_relabelled_cells_give_the_same_arch(variant: str, rng: np.random.Generator) -> None:
    space = small(variant=variant)
    for _ in range(30):
        arch = space.sample(rng)
        genes = _relabel(arch.genes, space.blocks, rng)
        assert space.canonicalize(genes) == arch
        if list(arch.genes) != genes:
            with pytest.raises(ArchError, match="canonical"):
                space.make(genes)


def test_parse_canonicalizes_pairs_and_block_order() -> None:
    space = get_space("nasnet")
    a = space.parse("normal: id(0)+sep3x3(1) max3x3(0)+avg3x3(1) sep5x5(2)+id(3) id(0)+id(0) conv1x1(5)+id(4) || "
                    "reduce: id(0)+id(1) id(0)+id(1) id(0)+id(1) id(0)+id(1) id(0)+id(1)")
    # swap the two independent first blocks (and fix references), swap pair members
    b = space.parse("normal: avg3x3(1)+max3x3(0) sep3x3(1)+id(0) id(2)+sep5x5(3) id(0)+id(0) id(4)+conv1x1(5) || "
                    "reduce: id(1)+id(0) id(0)+id(1) id(0)+id(1) id(0)+id(1) id(0)+id(1)")
    assert a == b
    assert space.parse(space.format(a)) == a


def test_canonical_cell_handles_identical_blocks() -> None:
    ops = NASNET_OPS
    cell = ((0, "sep3x3", 1, "id"), (0, "sep3x3", 1, "id"), (2, "max3x3", 0, "id"))
    other = ((0, "sep3x3", 1, "id"), (0, "sep3x3", 1, "id"), (3, "max3x3", 0, "id"))
    assert canonical_cell(cell, ops) == canonical_cell(other, ops)


def test_darts_nodes_need_distinct_inputs(rng: np.random.Generator) -> None:
    darts = get_space("nasnet", variant="darts")
    with pytest.raises(ArchError, match="normal block 1 takes input 0 twice"):
        darts.parse("normal: sep3x3(0)+sep3x3(1) sep3x3(0)+sep5x5(0) sep3x3(1)+id(0) id(0)+dil3x3(2) || "
                    "reduce: max3x3(0)+max3x3(1) id(2)+max3x3(1) max3x3(0)+id(2) id(2)+max3x3(1)")
    for _ in range(50):
        for a, _, b, _ in sum(darts.split(darts.sample(rng).genes), ()):
            assert a != b


# ---- block string errors -----------------------------------------------------------------------
@pytest.mark.parametrize("text, match", [
    ("normal: sep3x3(0)+id(1)", "two cells"),
    ("normal: a || reduce: b || c", "two cells"),
    ("norm: x || reduce: y", "bad cell label 'norm:'; valid: 'normal:'"),
    ("normal: sep3x3(0)+id(1) || reduce: sep3x3(0)+id(1)", "normal cell needs 5 blocks, got 1"),
])
def test_parse_structure_errors(text: str, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        get_space("nasnet").parse(text)


def test_parse_token_errors_name_bad_token_and_valid_ones() -> None:
    space = get_space("nasnet")
    good = space.presets["nasnet-a"]
    with pytest.raises(ArchError, match=r"bad op token 'sep9x9'.*valid ops \(nasnet variant\): id, conv1x3_3x1"):
        space.parse(good.replace("sep5x5(1)", "sep9x9(1)", 1))
    with pytest.raises(ArchError, match=r"normal block 1: bad input 4 .* valid inputs: 0, 1, 2"):
        space.parse(good.replace("sep5x5(0)+sep3x3(0)", "sep5x5(4)+sep3x3(0)", 1))
    with pytest.raises(ArchError, match=r"bad block token 'sep5x5\(1\)'"):
        space.parse(good.replace("sep5x5(1)+sep3x3(0)", "sep5x5(1)", 1))
    with pytest.raises(ArchError, match=r"bad op token 'sep3x3\[0\]'"):
        space.parse(good.replace("sep3x3(0)", "sep3x3[0]", 1))
    darts = get_space("nasnet", variant="darts")
    with pytest.raises(ArchError, match=r"bad op token 'sep7x7'.*\(darts variant\): max3x3, avg3x3, id"):
        darts.parse(darts.presets["darts-v2"].replace("sep3x3(0)", "sep7x7(0)", 1))


# ---- layers ------------------------------------------------------------------------------------
def test_layers_shapes_follow_the_macro_net() -> None:
    space = get_space("nasnet", channels=8, cells=2)
    arch = space.parse(space.presets["nasnet-a"])
    specs = space.layers(arch)
    assert specs[0].op == "conv_bn_act" and specs[0].output_shape == (24, 32, 32)
    combines = [s for s in specs if s.op == "cell_combine"]
    # normal cells concat 5 blocks, reduction cells 3; channels 8 -> 16 -> 32, sizes 32 -> 16 -> 8
    assert [s.output_shape for s in combines] == [(40, 32, 32)] * 2 + [(48, 16, 16)] + [(80, 16, 16)] * 2 \
        + [(96, 8, 8)] + [(160, 8, 8)] * 2
    pres = [s for s in specs if s.op == "cell_pre"]
    assert pres[0].input_shape == pres[1].input_shape == (24, 32, 32)
    # first normal cell after a reduction: h[i-2] is the 32x32 normal output -> factorized reduce
    after = pres[6]
    assert after.kwargs == {"cin": 40, "cout": 16, "s": 2} and after.output_shape == (16, 16, 16)
    ops = [s for s in specs if s.op == "cell_op"]
    strided = [s for s in ops if s.kwargs["s"] == 2]
    assert len(strided) == 2 * 6   # 7 of NASNet-A's 10 reduction ops read a cell input; two are max3x3(1): one layer
    assert all(s.input_shape[1:] == (32, 32) or s.input_shape[1:] == (16, 16) for s in strided)
    assert specs[-1].op == "head" and specs[-1].input_shape == (160, 8, 8)


@pytest.mark.parametrize("opts", [{}, {"variant": "darts", "resolution": 30}])
def test_every_layer_builds_alone_with_its_shape_and_macs(opts: dict) -> None:
    space = small(**opts)
    specs = space.all_layers()
    assert len({s.key for s in specs}) == len(specs)
    for spec in specs:
        module = build_layer(spec).eval()
        macs = [0]

        def count(mod: torch.nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if isinstance(mod, torch.nn.Conv2d):
                macs[0] += out[0].numel() * mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            elif isinstance(mod, torch.nn.Linear):
                macs[0] += mod.in_features * mod.out_features

        for m in module.modules():
            m.register_forward_hook(count)
        with torch.no_grad():
            y = module(torch.randn(1, *spec.input_shape))
        assert tuple(y.shape[1:]) == spec.output_shape, spec.key
        assert macs[0] == layer_macs(spec), spec.key


def _chain_cell(blocks: int, unused: int, ops: tuple[str, ...], rng: np.random.Generator) -> list:
    """Genes of a cell whose output concatenates exactly `unused` blocks: blocks 1 .. B-unused
    each read the block before them, the others read cell inputs only."""
    genes: list = []
    for j in range(blocks):
        a = 2 + j - 1 if 1 <= j <= blocks - unused else 0
        genes += [a, ops[rng.integers(len(ops))], 1, ops[rng.integers(len(ops))]]
    return genes


def test_all_layers_is_exact_and_small(rng: np.random.Generator) -> None:
    space = small()
    keys = {s.key for s in space.all_layers()}
    archs = [space.sample(rng) for _ in range(300)]
    archs += [space.canonicalize(_chain_cell(5, k_n, space.ops, rng) + _chain_cell(5, k_r, space.ops, rng))
              for k_n in range(1, 6) for k_r in range(1, 6)]
    seen = {s.key for a in archs for s in space.layers(a)}
    assert seen == keys
    assert len(get_space("nasnet").all_layers()) == 118
    assert len(get_space("nasnet", variant="darts").all_layers()) == 45


def test_build_matches_layers_params_and_num_classes(rng: np.random.Generator) -> None:
    space = small()
    arch = space.sample(rng)
    model = space.build(arch, num_classes=7).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    per_layer = sum(n_params(build_layer(s)) for s in space.layers(arch) if s.op != "head")
    head = space.layers(arch)[-1]
    assert n_params(model) == per_layer + (head.kwargs["cin"] + 1) * 7


def test_cell_ops_supernet_builder() -> None:
    x = torch.randn(2, 6, 9, 9)
    for token in ("none",) + NASNET_OPS + DARTS_OPS:
        for s in (1, 2):
            y = build_cell_op(token, 6, s)(x)
            assert y.shape == (2, 6, 5 if s == 2 else 9, 5 if s == 2 else 9), (token, s)
    assert not build_cell_op("none", 6, 1)(x).any()
    with pytest.raises(ValueError, match="unknown cell op 'conv9'; valid: none, id"):
        build_cell_op("conv9", 6, 1)


def test_onnx_export_matches_torch(tmp_path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture) -> None:
    from latency.onnx_io import export_onnx, run, session
    with caplog.at_level(logging.INFO, logger="latency.onnx_io"):
        for space in (small(), small(variant="darts")):
            arch = space.sample(rng)
            model = space.build(arch).eval()
            x = torch.randn(1, 3, 32, 32)
            path = export_onnx(model, x, tmp_path / f"{space.variant}.onnx")
            with torch.no_grad():
                ref = model(x).numpy()
            np.testing.assert_allclose(run(session(path), x.numpy()), ref, atol=1e-4)
    assert "TorchScript ONNX export failed" not in caplog.text   # no fallback to the dynamo exporter


def test_each_kind_of_layer_exports_for_profiling(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from latency.onnx_io import export_onnx, run, session
    kinds: dict[tuple, object] = {}
    for spec in small(resolution=16).all_layers():   # one spec per (op, op token, stride)
        kinds.setdefault((spec.op, spec.kwargs.get("op"), spec.kwargs.get("s")), spec)
    with caplog.at_level(logging.INFO, logger="latency.onnx_io"):
        for i, spec in enumerate(kinds.values()):
            module = build_layer(spec).eval()   # type: ignore[arg-type]
            x = torch.randn(1, *spec.input_shape)  # type: ignore[attr-defined]
            path = export_onnx(module, x, tmp_path / f"{i}.onnx")
            with torch.no_grad():
                np.testing.assert_allclose(run(session(path), x.numpy()), module(x).numpy(), atol=1e-4)
    assert "TorchScript ONNX export failed" not in caplog.text
    # cell ops at s=1 (but id) and s=2, cell_pre s=1 and s=2, cell_combine, stem conv, head
    assert len(kinds) == 2 * len(NASNET_OPS) - 1 + 5


def test_json_round_trip_and_key(rng: np.random.Generator) -> None:
    space = small()
    arch = space.sample(rng)
    assert space.arch_from_json(arch.to_json()) == arch
    assert Arch.from_json(arch.to_json()).key == arch.key


# ---- dead cells ----------------------------------------------------------------------------------
def test_dead_cells_are_no_layers_and_onnx_agrees(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No block reads h[i-1]: each cell reads the cell two back only, so every other cell feeds
    nothing. The ONNX export prunes those cells; layers() leaves them out, so the pixel1 LUT of the
    arch is close to the price of its exported graph (the export also merges a ReLU that two conv ops
    apply to the same state, which layers() counts twice) where the full layer list was about twice it."""
    import search_spaces.nasnet as nasnet_mod
    from latency.devices.pixel1 import net_ms
    from latency.onnx_cost import predict_onnx
    from latency.onnx_io import export_onnx
    from search_spaces.cell_graph import live_cells
    space = small()
    cell = "max3x3(0)+max3x3(0) sep3x3(0)+conv1x1(2) sep3x3(0)+max3x3(3) sep3x3(2)+id(4) max3x3(4)+sep3x3(5)"
    arch = space.parse(f"normal: {cell} || reduce: {cell}")
    _, cells, _ = space._plan(arch)
    live = live_cells([c for _, c, _ in cells])
    assert live == [True, False, True, False, True]          # N0 R1 N2 R3 N4: N4 <- N2 <- N0 <- stem
    assert sum(s.op == "cell_combine" for s in space.layers(arch)) == 3
    path = export_onnx(space.build(arch).eval(), torch.zeros(1, *space.input_shape), tmp_path / "net.onnx")
    graph = predict_onnx(path).latency_ms
    assert graph == pytest.approx(net_ms(space.layers(arch)), rel=0.08)
    monkeypatch.setattr(nasnet_mod, "live_cells", lambda cells: [True] * len(cells))
    assert net_ms(space.layers(arch)) > 1.6 * graph          # every cell counted
    monkeypatch.undo()
    full = space.parse(f"normal: {cell.replace('max3x3(0)+max3x3(0)', 'max3x3(0)+max3x3(1)')} || reduce: {cell}")
    assert live_cells([c for _, c, _ in space._plan(full)[1]]) == [True] * 5   # one block reads h[i-1]


def test_a_pool_applied_twice_to_one_state_is_one_layer_as_in_onnx(tmp_path) -> None:
    """Two identical pools on the same cell state compute one tensor; the ONNX export keeps one node,
    and layers() one layer (NASNet-A: 58 pools in its blocks, 42 exported). Pools on different states,
    or different pools, stay."""
    import collections

    import onnx

    from latency.onnx_io import export_onnx
    space = get_space("nasnet")
    for i, arch in enumerate([space.parse(space.presets["nasnet-a"]), space.sample(np.random.default_rng(3))]):
        path = export_onnx(space.build(arch).eval(), torch.zeros(1, *space.input_shape), tmp_path / f"n{i}.onnx")
        nodes = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
        ops = collections.Counter(s.kwargs["op"] for s in space.layers(arch) if s.op == "cell_op")
        assert ops["avg3x3"] == nodes["AveragePool"]
        assert sum(v for k, v in ops.items() if k.startswith("max")) == nodes["MaxPool"]
    blocks = [x for x in space.split(space.parse(space.presets["nasnet-a"]).genes)[0]]
    assert ("avg3x3" in blocks[1]) and blocks[1][0] == blocks[1][2] == 0    # avg3x3(0)+avg3x3(0): one layer
