"""Extra ops for reference networks that the shared vocabulary in `ops.py` does not cover.

`dwsep`: the MobileNetV1 depthwise-separable layer (Howard et al. 2017, Fig. 3): depthwise kxk
conv (stride s) + BN + act, then pointwise 1x1 conv + BN + act, with no residual. An `mbconv`
with e=1 is close but differs (no activation after the projection, and a residual add whenever
shapes match), so it gets its own op. The Pixel 1 device model (`latency/devices/pixel1.py`)
uses it for MobileNetV1; any space may use it too.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.core.layer import LayerSpec
from search_spaces.ops import OPS, OpDef, _act, conv_out

if TYPE_CHECKING:
    import torch.nn as nn


def _build_dwsep(cin: int, cout: int, k: int, s: int, act: str = "relu6") -> "nn.Module":
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(cin, cin, k, s, k // 2, groups=cin, bias=False), nn.BatchNorm2d(cin), _act(act),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), _act(act))


def _dwsep_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    _, ho, wo = spec.output_shape
    return ho * wo * p["cin"] * (p["k"] * p["k"] + p["cout"])


OPS.register("dwsep", OpDef(_build_dwsep, _dwsep_macs))


def dwsep_spec(cin: int, cout: int, k: int, s: int, hw: tuple[int, int], act: str = "relu6") -> LayerSpec:
    h, w = hw
    params: dict[str, int | str] = {"cin": cin, "cout": cout, "k": k, "s": s}
    if act != "relu6":
        params["act"] = act
    return LayerSpec.make("dwsep", params, (cin, h, w), (cout, conv_out(h, k, s), conv_out(w, k, s)))
