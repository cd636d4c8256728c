"""MobileNetV3-style ops: the `ir_block` bneck and the `v3_head`, as torch modules with MAC counts.

The Pixel 1 device model already prices both (latency/devices/primitives.py: the published
MobileNetV3 nets it is calibrated on use them); this module makes them buildable, so a space made
of them (`ofa_mbv3`) builds, exports to ONNX and can be profiled layer by layer.

`ir_block(cin, mid, cout, k, s, se_ch, act)`: [1x1 expand cin->mid + BN + act] (absent when
mid == cin), depthwise kxk/s + BN + act, [squeeze-excite: global pool, 1x1 conv mid->se_ch with
bias, ReLU, 1x1 conv se_ch->mid with bias, hard-sigmoid, scale], 1x1 project mid->cout + BN,
residual add when s == 1 and cin == cout. This is Once-for-All's MBConvLayer (Cai et al. 2020).

`v3_head(cin, c1, c2, classes, act)`: 1x1 conv cin->c1 + BN + act, global pool, 1x1 conv
c1->c2 without BN and without bias + act (OFA's feature-mix layer), linear c2->classes with bias.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.core.layer import LayerSpec
from search_spaces.ops import OPS, OpDef, _act, inverted_residual

if TYPE_CHECKING:
    import torch.nn as nn


def _build_ir_block(cin: int, mid: int, cout: int, k: int, s: int, se_ch: int = 0, act: str = "relu") -> "nn.Module":
    return inverted_residual(cin, mid, cout, k, s, act, se_ch, "hardsigmoid")


def _ir_block_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid, se_ch = int(p["mid"]), int(p.get("se_ch", 0))
    expand = h * w * cin * mid if mid != cin else 0
    return expand + ho * wo * mid * p["k"] ** 2 + 2 * mid * se_ch + ho * wo * mid * p["cout"]


def _build_v3_head(cin: int, c1: int, c2: int, classes: int, act: str = "hswish") -> "nn.Module":
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(cin, c1, 1, bias=False), nn.BatchNorm2d(c1), _act(act), nn.AdaptiveAvgPool2d(1),
                         nn.Conv2d(c1, c2, 1, bias=False), _act(act), nn.Flatten(), nn.Linear(c2, classes))


def _v3_head_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    return h * w * cin * p["c1"] + p["c1"] * p["c2"] + p["c2"] * p["classes"]


for _name, _def in (("ir_block", OpDef(_build_ir_block, _ir_block_macs)), ("v3_head", OpDef(_build_v3_head, _v3_head_macs))):
    if _name not in OPS:   # one registration, however the module is reached
        OPS.register(_name, _def)


def ir_block_spec(cin: int, mid: int, cout: int, k: int, s: int, r: int, se_ch: int = 0, act: str = "relu") -> LayerSpec:
    ro = (r - 1) // s + 1
    return LayerSpec.make("ir_block", {"cin": cin, "mid": mid, "cout": cout, "k": k, "s": s, "se_ch": se_ch, "act": act},
                          (cin, r, r), (cout, ro, ro))


def v3_head_spec(cin: int, c1: int, c2: int, classes: int, r: int, act: str = "hswish") -> LayerSpec:
    return LayerSpec.make("v3_head", {"cin": cin, "c1": c1, "c2": c2, "classes": classes, "act": act},
                          (cin, r, r), (classes,))
