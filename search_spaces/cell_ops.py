"""Cell ops of the NASNet / DARTS cell spaces, registered in the shared `OPS` vocabulary.

Every op maps C channels to C channels with stride 1 or 2 (stride 2 only on a reduction cell's
inputs). Tokens (the names block strings and genes use):

==============  ===========================================================  ==================
token           module (ReLU first, BN last, as in NASNet and DARTS)         DARTS name
==============  ===========================================================  ==================
none            zero (strided); only for supernets, never in an arch         none
id              identity; at stride 2 a factorized reduce (two 1x1 convs)    skip_connect
avg3x3          3x3 average pool (padding not counted)                       avg_pool_3x3
max3x3/5x5/7x7  kxk max pool                                                 max_pool_3x3
conv1x1/3x3     ReLU-conv-BN                                                 -
conv3x3d2       ReLU-conv 3x3 dilation 2-BN (NASNet's "3x3 dilated conv")    -
conv1x3_3x1     ReLU-conv 1x3-conv 3x1-BN (also 1x7_7x1)                     conv_7x1_1x7
sep3x3/5x5/7x7  (ReLU-depthwise kxk-pointwise-BN) twice                      sep_conv_3x3
dil3x3/5x5      ReLU-depthwise kxk dilation 2-pointwise-BN                   dil_conv_3x3
==============  ===========================================================  ==================

`NASNET_OPS` is the full 13-op list of Zoph et al. 2018 (Sec. 3); `DARTS_OPS` the 7 ops of a
derived DARTS cell (Liu et al. 2019, Sec. 3.1; `none` is only used during the relaxed search).
`build_cell_op(token, c, stride)` builds one op module; the differentiable trainer mixes these.

LayerSpec ops registered here (each buildable alone on one input tensor, for profiling):
``cell_op(c, op, s)`` one cell op; ``cell_pre(cin, cout, s)`` the cell-input preprocessing
(s=1: ReLU-1x1 conv-BN, s=2: factorized reduce of an input at twice the resolution);
``cell_combine(c, blocks, concat)`` the adds + concat of a cell, on a (2*blocks*c, H, W) tensor
holding the 2*blocks op outputs, returning (concat*c, H, W).
MACs count convolutions and linear layers only (pools, adds, concat and BN count 0).
"""
from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING

from nas.core.layer import LayerSpec
from search_spaces.ops import OPS, OpDef

if TYPE_CHECKING:
    import torch.nn as nn

NONE = "none"
IDENTITY = "id"
#: Zoph et al. 2018, Sec. 3: the 13 operations the NASNet controller chooses from.
NASNET_OPS: tuple[str, ...] = ("id", "conv1x3_3x1", "conv1x7_7x1", "conv3x3d2", "avg3x3", "max3x3", "max5x5",
                               "max7x7", "conv1x1", "conv3x3", "sep3x3", "sep5x5", "sep7x7")
#: Liu et al. 2019 (DARTS), Sec. 3.1, in the order of DARTS' PRIMITIVES, without `none`.
DARTS_OPS: tuple[str, ...] = ("max3x3", "avg3x3", "id", "sep3x3", "sep5x5", "dil3x3", "dil5x5")
#: DARTS' own primitive names (genotypes.PRIMITIVES) -> our tokens.
DARTS_NAMES: dict[str, str] = {
    "none": NONE, "max_pool_3x3": "max3x3", "avg_pool_3x3": "avg3x3", "skip_connect": IDENTITY,
    "sep_conv_3x3": "sep3x3", "sep_conv_5x5": "sep5x5", "dil_conv_3x3": "dil3x3", "dil_conv_5x5": "dil5x5",
    "sep_conv_7x7": "sep7x7", "conv_7x1_1x7": "conv1x7_7x1"}
DARTS_PRIMITIVES: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                                     "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
ALL_OPS: tuple[str, ...] = (NONE,) + NASNET_OPS + ("dil3x3", "dil5x5")
#: ops without weights: two of them with the same token on the same cell state compute the same
#: tensor, and the ONNX export (common-subexpression elimination) keeps one
POOLS: tuple[str, ...] = tuple(t for t in ALL_OPS if t == "avg3x3" or t.startswith("max"))


def out_size(size: int, stride: int) -> int:
    """Spatial size after any cell op (all are 'same'-padded): ceil(size / stride)."""
    return (size - 1) // stride + 1


@cache
def cell_modules() -> SimpleNamespace:
    """Torch module classes, defined once on first use (keeps torch out of module import):
    Zero, FactorizedReduce, Combine (a layer of their own), and Cell / CellNet (the DAG wiring
    of a cell and of the macro net; a supernet can pass mixed ops as `ops`)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Zero(nn.Module):
        def __init__(self, stride: int) -> None:
            super().__init__()
            self.stride = stride

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, ::self.stride, ::self.stride] * 0.0

    class FactorizedReduce(nn.Module):
        """Halve the resolution with two stride-2 1x1 convs, the second on the input shifted by one
        pixel (zero-padded at the end, as NASNet's TF code does, so odd sizes work too)."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.relu = nn.ReLU(inplace=False)
            self.conv_a = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
            self.conv_b = nn.Conv2d(cin, cout - cout // 2, 1, 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(x)
            shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
            return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))

    class Combine(nn.Module):
        """Adds the op outputs pairwise and concatenates the last `concat` sums (latency proxy of
        a cell's combine step; which sums are concatenated does not change its cost)."""

        def __init__(self, c: int, blocks: int, concat: int) -> None:
            super().__init__()
            self.c, self.blocks, self.concat = c, blocks, concat

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = torch.split(x, self.c, dim=1)
            sums = [parts[2 * j] + parts[2 * j + 1] for j in range(self.blocks)]
            return torch.cat(sums[self.blocks - self.concat:], dim=1)

    class Cell(nn.Module):
        """states = [pre0(h[i-2]), pre1(h[i-1])]; block j appends ops[2j](states[inputs[2j]])
        + ops[2j+1](states[inputs[2j+1]]); the output concatenates states[concat]."""

        def __init__(self, pre0: nn.Module, pre1: nn.Module, ops: nn.ModuleList, inputs: list[int],
                     concat: tuple[int, ...]) -> None:
            super().__init__()
            self.pre0, self.pre1, self.ops = pre0, pre1, ops
            self.inputs, self.concat = list(inputs), list(concat)

        def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
            states = [self.pre0(s0), self.pre1(s1)]
            for j in range(len(self.ops) // 2):
                states.append(self.ops[2 * j](states[self.inputs[2 * j]])
                              + self.ops[2 * j + 1](states[self.inputs[2 * j + 1]]))
            return torch.cat([states[i] for i in self.concat], dim=1)

    class CellNet(nn.Module):
        """stem -> cells (each fed the two previous outputs, the stem counting as both) -> head."""

        def __init__(self, stem: nn.Module, cells: nn.ModuleList, head: nn.Module) -> None:
            super().__init__()
            self.stem, self.cells, self.head = stem, cells, head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s0 = s1 = self.stem(x)
            for cell in self.cells:
                s0, s1 = s1, cell(s0, s1)
            return self.head(s1)

    return SimpleNamespace(Zero=Zero, FactorizedReduce=FactorizedReduce, Combine=Combine, Cell=Cell,
                           CellNet=CellNet)


def _relu_conv_bn(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: int = 1) -> list["nn.Module"]:
    import torch.nn as nn
    pad = (dilation * (kernel[0] // 2), dilation * (kernel[1] // 2))
    return [nn.ReLU(inplace=False), nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout)]


def _dw_pw(c: int, k: int, stride: int, dilation: int) -> list["nn.Module"]:
    import torch.nn as nn
    pad = dilation * (k // 2)
    return [nn.ReLU(inplace=False), nn.Conv2d(c, c, k, stride, pad, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)]


def build_cell_op(token: str, c: int, stride: int) -> "nn.Module":
    """One cell op (`token` from `ALL_OPS`) mapping (B, c, H, W) to (B, c, ceil(H/s), ceil(W/s))."""
    import torch.nn as nn
    if token not in ALL_OPS:
        raise ValueError(f"unknown cell op {token!r}; valid: {', '.join(ALL_OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"cell op stride {stride} is not 1 or 2")
    m = cell_modules()
    if token == NONE:
        return m.Zero(stride)
    if token == IDENTITY:
        return nn.Identity() if stride == 1 else m.FactorizedReduce(c, c)
    if token == "avg3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if token.startswith("max"):
        k = int(token[3])
        return nn.MaxPool2d(k, stride, k // 2)
    if token in ("conv1x1", "conv3x3"):
        k = int(token[4])
        return nn.Sequential(*_relu_conv_bn(c, c, (k, k), (stride, stride)))
    if token == "conv3x3d2":
        return nn.Sequential(*_relu_conv_bn(c, c, (3, 3), (stride, stride), dilation=2))
    if token in ("conv1x3_3x1", "conv1x7_7x1"):
        k = int(token[6])
        return nn.Sequential(nn.ReLU(inplace=False),
                             nn.Conv2d(c, c, (1, k), (1, stride), (0, k // 2), bias=False),
                             nn.Conv2d(c, c, (k, 1), (stride, 1), (k // 2, 0), bias=False), nn.BatchNorm2d(c))
    k = int(token[3])
    if token.startswith("sep"):   # stacked twice (NASNet Appendix A.4; DARTS SepConv)
        return nn.Sequential(*_dw_pw(c, k, stride, 1), *_dw_pw(c, k, 1, 1))
    return nn.Sequential(*_dw_pw(c, k, stride, 2))   # dil3x3 / dil5x5


def build_preprocess(cin: int, cout: int, s: int) -> "nn.Module":
    """Cell-input preprocessing: s=1 ReLU-1x1 conv-BN, s=2 factorized reduce (input at 2x resolution)."""
    import torch.nn as nn
    if s == 2:
        return cell_modules().FactorizedReduce(cin, cout)
    return nn.Sequential(*_relu_conv_bn(cin, cout, (1, 1), (1, 1)))


def build_combine(c: int, blocks: int, concat: int) -> "nn.Module":
    return cell_modules().Combine(c, blocks, concat)


def cell_op_macs(token: str, c: int, h: int, w: int, stride: int) -> int:
    """Multiply-accumulates of one cell op on a (c, h, w) input."""
    ho, wo = out_size(h, stride), out_size(w, stride)
    if token == NONE or token in POOLS or (token == IDENTITY and stride == 1):
        return 0
    if token == IDENTITY:
        return ho * wo * c * c
    if token in ("conv1x1", "conv3x3", "conv3x3d2"):
        k = 1 if token == "conv1x1" else 3
        return ho * wo * c * c * k * k
    if token in ("conv1x3_3x1", "conv1x7_7x1"):
        k = int(token[6])
        return h * wo * c * c * k + ho * wo * c * c * k
    k = int(token[3])
    one = ho * wo * c * (k * k + c)
    return 2 * one if token.startswith("sep") else one


def _op_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    _, h, w = spec.input_shape
    return cell_op_macs(str(p["op"]), int(p["c"]), h, w, int(p["s"]))


def _pre_macs(spec: LayerSpec) -> int:
    _, ho, wo = spec.output_shape
    return ho * wo * int(spec.kwargs["cin"]) * int(spec.kwargs["cout"])


OPS.register("cell_op", OpDef(lambda op, c, s: build_cell_op(op, c, s), _op_macs))
OPS.register("cell_pre", OpDef(lambda cin, cout, s: build_preprocess(cin, cout, s), _pre_macs))
OPS.register("cell_combine", OpDef(lambda c, blocks, concat: build_combine(c, blocks, concat), lambda spec: 0))


def op_spec(token: str, c: int, hw: tuple[int, int], s: int) -> LayerSpec:
    h, w = hw
    return LayerSpec.make("cell_op", {"op": token, "c": c, "s": s}, (c, h, w), (c, out_size(h, s), out_size(w, s)))


def pre_spec(cin: int, cout: int, hw: tuple[int, int], s: int) -> LayerSpec:
    h, w = hw
    return LayerSpec.make("cell_pre", {"cin": cin, "cout": cout, "s": s}, (cin, h, w),
                          (cout, out_size(h, s), out_size(w, s)))


def combine_spec(c: int, blocks: int, concat: int, hw: tuple[int, int]) -> LayerSpec:
    return LayerSpec.make("cell_combine", {"c": c, "blocks": blocks, "concat": concat}, (2 * blocks * c, *hw),
                          (concat * c, *hw))
