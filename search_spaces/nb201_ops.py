"""Ops and macro net of the NAS-Bench-201 / NATS-Bench CIFAR networks (Dong & Yang, ICLR 2020;
Dong et al., TPAMI 2021), registered in the shared `OPS` vocabulary.

The benchmark's macro net: stem 3x3 conv + BN (C) -> N cells (C) -> residual reduction block
(C -> 2C, stride 2) -> N cells (2C) -> residual block (2C -> 4C) -> N cells (4C) -> BN + ReLU ->
global pool -> linear. A cell has 4 nodes; node j (1..3) is the sum of one op per earlier node i.
Edges leaving node 0 map the cell's input width to its output width (they differ only in the NATS
size space); the others keep the output width. Edge ops (the benchmark's names):

==============  ============================================================================
none            zero output (no layer of its own; its edge adds nothing)
skip_connect    identity; when the widths differ, ReLU-free 1x1 conv + BN (stride 1)
nor_conv_1x1    ReLU - 1x1 conv - BN
nor_conv_3x3    ReLU - 3x3 conv - BN
avg_pool_3x3    3x3 average pool, stride 1, padding not counted (a ReLU-1x1 conv-BN first when
                the widths differ)
==============  ============================================================================

Residual block (stride 2): ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a shortcut of 2x2 average
pool and 1x1 conv (no BN); the two are added.

LayerSpec ops: ``nb201_edge(op, cin, cout)``, ``nb201_resblock(cin, cout)``, ``nb201_head(cin,
classes)`` (BN + ReLU + pool + linear). The stem is the shared ``conv_bn_act`` with act=none.
MACs count convolutions and linear layers. `naslib_flops` is the FLOPs convention of the
NAS-Bench-201 scores NASLib ships (see its docstring).
"""
from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Sequence

from nas.core.layer import LayerSpec
from search_spaces.ops import OPS, OpDef, conv_spec

if TYPE_CHECKING:
    import torch.nn as nn

NONE, SKIP, CONV1, CONV3, AVG = "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"
#: NAS-Bench-201's op list in its own order (the order of its op indices)
NB201_OPS: tuple[str, ...] = (NONE, SKIP, CONV1, CONV3, AVG)
#: (from node, to node) of the 6 edges in the order of the NAS-Bench-201 string
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
Cell = tuple[str, ...]   # one op per edge of EDGES


def _relu_conv_bn(cin: int, cout: int, k: int, s: int) -> "nn.Module":
    import torch.nn as nn
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(cout))


@cache
def modules() -> SimpleNamespace:
    """Torch classes, defined on first use (keeps torch out of module import)."""
    import torch
    import torch.nn as nn

    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mul(0.0)

    class ResBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv_a = _relu_conv_bn(cin, cout, 3, 2)
            self.conv_b = _relu_conv_bn(cout, cout, 3, 1)
            self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.downsample(x) + self.conv_b(self.conv_a(x))

    class Cell(nn.Module):
        """`edges` holds one module per edge of EDGES; node j sums its incoming edges' outputs."""

        def __init__(self, edges: Sequence[nn.Module]) -> None:
            super().__init__()
            self.edges = nn.ModuleList(edges)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nodes = [x]
            for j in (1, 2, 3):
                ins = [self.edges[e](nodes[a]) for e, (a, b) in enumerate(EDGES) if b == j]
                total = ins[0]
                for t in ins[1:]:
                    total = total + t
                nodes.append(total)
            return nodes[3]

    class Sum(nn.Module):
        """A node sum of `inputs` tensors, timed on one input (`x + x + ...`: inputs - 1 adds)."""

        def __init__(self, inputs: int) -> None:
            super().__init__()
            self.inputs = inputs

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            total = x
            for _ in range(self.inputs - 1):
                total = total + x
            return total

    return SimpleNamespace(Zero=Zero, ResBlock=ResBlock, Cell=Cell, Sum=Sum)


def build_edge(op: str, cin: int, cout: int) -> "nn.Module":
    import torch.nn as nn
    if op not in NB201_OPS:
        raise ValueError(f"unknown NAS-Bench-201 op {op!r}; valid: {', '.join(NB201_OPS)}")
    if op == NONE:
        if cin != cout:
            raise ValueError(f"op 'none' needs equal widths, got {cin} -> {cout}")
        return modules().Zero()
    if op == SKIP:
        if cin == cout:
            return nn.Identity()
        return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
    if op == AVG:
        pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        return pool if cin == cout else nn.Sequential(_relu_conv_bn(cin, cout, 1, 1), pool)
    return _relu_conv_bn(cin, cout, 1 if op == CONV1 else 3, 1)


def _relu() -> "nn.Module":
    import torch.nn as nn
    return nn.ReLU(inplace=False)


def _build_head(cin: int, classes: int) -> "nn.Module":
    import torch.nn as nn
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(cin, classes))


def _edge_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    op, cin, cout = str(p["op"]), int(p["cin"]), int(p["cout"])
    _, h, w = spec.output_shape
    if op in (CONV1, CONV3):
        return h * w * cin * cout * (9 if op == CONV3 else 1)
    return h * w * cin * cout if cin != cout and op in (SKIP, AVG) else 0


def _res_macs(spec: LayerSpec) -> int:
    cin, cout = int(spec.kwargs["cin"]), int(spec.kwargs["cout"])
    _, ho, wo = spec.output_shape
    return ho * wo * (9 * cin * cout + 9 * cout * cout + cin * cout)


OPS.register("nb201_edge", OpDef(build_edge, _edge_macs))
OPS.register("nb201_resblock", OpDef(lambda cin, cout: modules().ResBlock(cin, cout), _res_macs))
OPS.register("nb201_sum", OpDef(lambda c, inputs: modules().Sum(int(inputs)), lambda spec: 0))
OPS.register("nb201_zero", OpDef(lambda c: modules().Zero(), lambda spec: 0))
OPS.register("nb201_relu", OpDef(lambda c: _relu(), lambda spec: 0))
OPS.register("nb201_head", OpDef(_build_head, lambda spec: int(spec.kwargs["cin"]) * int(spec.kwargs["classes"])))


def edge_spec(op: str, cin: int, cout: int, hw: int) -> LayerSpec | None:
    """The layer of one edge; None when it has no work of its own (none, same-width skip)."""
    if op == NONE or (op == SKIP and cin == cout):
        return None
    return LayerSpec.make("nb201_edge", {"op": op, "cin": cin, "cout": cout}, (cin, hw, hw), (cout, hw, hw))


def res_spec(cin: int, cout: int, hw: int) -> LayerSpec:
    ho = (hw - 1) // 2 + 1
    return LayerSpec.make("nb201_resblock", {"cin": cin, "cout": cout}, (cin, hw, hw), (cout, ho, ho))


def head_spec(cin: int, classes: int, hw: int) -> LayerSpec:
    return LayerSpec.make("nb201_head", {"cin": cin, "classes": classes}, (cin, hw, hw), (classes,))


def stem_spec(cout: int, resolution: int) -> LayerSpec:
    return conv_spec(3, cout, 3, 1, (resolution, resolution), act="none")


def macro_layers(cells: Sequence[tuple[Cell, int, int]], resblocks: Sequence[tuple[int, int]], stem: int,
                 classes: int, resolution: int, per_stage: int) -> list[tuple[str, LayerSpec | None, int]]:
    """The macro net in order as (slot, spec, edge index or -1): `cells` are (ops, cin, cout) per cell,
    `per_stage` cells per stage, a residual block (cin, cout) between stages. Slot 'edge' specs may
    be None (an edge without a layer)."""
    out: list[tuple[str, LayerSpec | None, int]] = [("stem", stem_spec(stem, resolution), -1)]
    hw = resolution
    for i, (ops, cin, cout) in enumerate(cells):
        if i and i % per_stage == 0:
            rin, rout = resblocks[i // per_stage - 1]
            out.append(("res", res_spec(rin, rout, hw), -1))
            hw = (hw - 1) // 2 + 1
        for e, ((a, _), op) in enumerate(zip(EDGES, ops)):
            out.append(("edge", edge_spec(op, cin if a == 0 else cout, cout, hw), e))
    last = cells[-1][2]
    out.append(("head", head_spec(last, classes, hw), -1))
    return out


def sum_spec(c: int, hw: int, inputs: int) -> LayerSpec:
    """The sum at a cell node with `inputs` incoming edges (a join layer: `macro_joins`)."""
    return LayerSpec.make("nb201_sum", {"c": c, "inputs": inputs}, (c, hw, hw), (c, hw, hw))


def zero_spec(c: int, hw: int) -> LayerSpec:
    """A `none` edge: its zero output is computed at run time (x * 0), a join layer."""
    return LayerSpec.make("nb201_zero", {"c": c}, (c, hw, hw), (c, hw, hw))


def relu_spec(c: int, hw: int) -> LayerSpec:
    """The ReLU of a node tensor that ReLU-conv edges and other ops both read (a join layer: `relu_joins`)."""
    return LayerSpec.make("nb201_relu", {"c": c}, (c, hw, hw), (c, hw, hw))


def merged_edges(ops: Cell, cin: int, cout: int) -> tuple[bool, ...]:
    """Per edge, whether the exported graph merges it into an earlier edge: an op without weights (a
    same-width average pool, a `none` edge's x * 0) applied to a tensor that an earlier edge already
    applied it to runs once (the exporter merges identical nodes; a skip into node 1 makes node 1 the
    same tensor as node 0). Counted in onnxruntime's int8 graphs of 40 random nb201 nets: their
    QLinearAveragePool nodes matched this for all 40 (one per edge overcounted 11 of them), their
    QLinearMul nodes 39."""
    alias = {0: 0, 1: 0 if ops[0] == SKIP and cin == cout else 1, 2: 2}
    seen: set[tuple[int, str]] = set()
    out = []
    for (a, _), op in zip(EDGES, ops):
        weightless = op == NONE or (op == AVG and (cin if a == 0 else cout) == cout)
        out.append(weightless and (alias[a], op) in seen)
        if weightless:
            seen.add((alias[a], op))
    return tuple(out)


def relu_joins(ops: Cell, cin: int, cout: int) -> list[int]:
    """Widths of the cell's node tensors that pay an int8 requantization for their ReLU, one per tensor.

    ReLU-conv edges (nor_conv_1x1 / 3x3, and a width-changing pool's 1x1 conv) read their input
    through a ReLU; the exporter merges the ReLUs of one tensor into one. Inside a quantized net
    onnxruntime's quantizer folds that ReLU into the tensor's producer when the ReLU is its only
    reader (free), else it stays a DequantizeLinear + QuantizeLinear (`latency.int8_context`). The
    other readers: skip edges into a sum (a skip into node 1, its only input, makes node 1 the same
    tensor as node 0), pools, `none` edges (x * 0) and width-changing skips (1x1 conv, no ReLU).
    A node that only `none` edges feed (through skips and pools) is all zeros: its ReLU's calibrated
    range equals its own and onnxruntime drops the requantization as a no-op."""
    alias = {0: 0, 1: 0 if ops[0] == SKIP and cin == cout else 1, 2: 2}
    zero = {0: False}
    for j in (1, 2):
        zero[j] = all(op == NONE or (op in (SKIP, AVG) and cin == cout and zero[a])
                      for (a, b), op in zip(EDGES, ops) if b == j)
    relu: dict[int, bool] = {}
    other: dict[int, bool] = {}
    for (a, b), op in zip(EDGES, ops):
        t = alias[a]
        width = cin if a == 0 else cout
        if op in (CONV1, CONV3) or (op == AVG and width != cout):
            relu[t] = True
        elif not (op == SKIP and b == 1 and width == cout):   # the skip into node 1 reads nothing
            other[t] = True
    if merged_edges(ops, cin, cout)[1] and ops[1] == AVG:   # pool 0->2 merged into node 1: node 2's sum reads it
        other[alias[1]] = True
    return [cin if t == 0 else cout for t in sorted(relu) if other.get(t) and not zero[t]]


def macro_joins(cells: Sequence[tuple[Cell, int, int]], resolution: int, per_stage: int,
                relus: bool = False) -> list[tuple[LayerSpec, int]]:
    """The join layers of the macro net as (spec, edge index or -1): per cell the sums of nodes 2 and
    3 (2 and 3 inputs; node 1 has one) and each `none` edge's x * 0. No layer of `macro_layers`
    holds them: a float runtime fuses a sum into the conv before it and they cost ~nothing, but an
    int8 graph runs each sum as a requantizing add (QLinearAdd) and each zero edge as a QLinearMul
    (measured in onnxruntime: 45 adds in the benchmark's net whatever the ops). Int8 tables price
    them (`SearchSpace.join_layers`); float tables and predictions do not. `relus`: as the exported
    int8 graph runs: also the shared ReLU requantizations of `relu_joins` (edge index -2: they depend
    on several edges of the cell), and a zero edge merged into an earlier one (`merged_edges`) none."""
    out: list[tuple[LayerSpec, int]] = []
    hw = resolution
    for i, (ops, cin, cout) in enumerate(cells):
        if i and i % per_stage == 0:
            hw = (hw - 1) // 2 + 1
        merged = merged_edges(ops, cin, cout) if relus else (False,) * len(ops)
        out += [(zero_spec(cout, hw), e) for e, op in enumerate(ops) if op == NONE and not merged[e]]
        out += [(sum_spec(cout, hw, n), -1) for n in (2, 3)]
        if relus:
            out += [(relu_spec(c, hw), -2) for c in relu_joins(ops, cin, cout)]
    return out


def build_macro(plan: Sequence[tuple[str, LayerSpec | None, int]], cells: Sequence[tuple[Cell, int, int]]) -> "nn.Module":
    """A torch module from `macro_layers`' plan (cells rebuilt with Zero / Identity for empty edges)."""
    import torch.nn as nn
    from search_spaces.ops import build_layer
    m = modules()
    parts: list[nn.Module] = []
    edges: list[nn.Module] = []
    cell_i = 0
    for slot, spec, e in plan:
        if slot == "edge":
            ops, cin, cout = cells[cell_i]
            edges.append(build_layer(spec) if spec is not None else build_edge(ops[e], cout, cout))
            if len(edges) == len(EDGES):
                parts.append(m.Cell(edges))
                edges, cell_i = [], cell_i + 1
        else:
            assert spec is not None  # stem, res and head always have a layer
            parts.append(build_layer(spec))
    return nn.Sequential(*parts)


def naslib_flops(specs: Sequence[LayerSpec]) -> int:
    """FLOPs as in NASLib's NAS-Bench-201 `flops` scores (not our MACs; see below).

    NASLib computes its `flops` score with tensorwatch's `ModelStats` (naslib/predictors/utils/pruners/
    predictive.py `find_measures`, measures/model_stats.py), whose per-module counter is torchstat's
    (tensorwatch/model_graph/torchstat/compute_flops.py). Its convention, per module of the net:
    conv multiply-accumulates (+ bias), linear in x out (no bias term), k*k per output of an average
    pool (padded taps included), 2 per BatchNorm input element (affine), 1 per ReLU element, and for an
    adaptive average pool (the head's global pool) (window height + 1) * (window width + 1) per output
    per channel: `compute_adaptivepool_flops` adds 1 to each window extent, so the 8x8 -> 1x1 pool of a
    32x32 net counts 64 * 9 * 9 = 5,184 and the 4x4 -> 1x1 pool of a 16x16 net 64 * 5 * 5 = 1,600.
    That pool term was the constant by which this count was once short of NASLib's.

    Equal to NASLib's score for every arch of zc_nasbench201.json, all three datasets
    (tests/test_nb201.py). `space.macs(arch)` stays our MACs: conv and linear multiply-accumulates only."""
    total = 0
    for s in specs:
        macs = OPS.get(s.op).macs(s)
        if s.op == "conv_bn_act":
            c, h, w = s.output_shape
            total += macs + 2 * c * h * w
        elif s.op == "nb201_edge":
            op, cin, cout = s.kwargs["op"], int(s.kwargs["cin"]), int(s.kwargs["cout"])
            c, h, w = s.output_shape
            n = c * h * w
            if op in (CONV1, CONV3):
                total += macs + 3 * n
            elif op == AVG:
                total += 9 * n + (macs + 3 * n if cin != cout else 0)
            else:   # width-changing skip: conv + BN
                total += macs + 2 * n
        elif s.op == "nb201_resblock":
            cin, h, w = s.input_shape
            cout, ho, wo = s.output_shape
            n = cout * ho * wo
            total += macs + cin * h * w + 2 * n + n + 2 * n + 4 * cin * ho * wo
        elif s.op == "nb201_head":   # BN (2) + ReLU (1) per element, the global pool as above, linear
            cin, h, w = s.input_shape
            total += macs + 3 * cin * h * w + cin * (h + 1) * (w + 1)
        else:
            raise ValueError(f"naslib_flops: unexpected op {s.op!r}")
    return total
