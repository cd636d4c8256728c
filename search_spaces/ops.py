"""The op vocabulary shared by all spaces: LayerSpec op name -> torch module builder + MAC count.

Each space composes its networks from these ops (and may register more), so every layer that a
latency table is keyed by can be built, exported to ONNX and timed on its own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from nas.core.layer import LayerSpec
from nas.core.ops import OPS, OpDef, build_layer, layer_macs  # noqa: F401  (the vocabulary's registry)

#: bounds of the image-size options of the ImageNet-style spaces: 1024 px is ~20x the pixels of 224
#: (a 100,000 px input would try to allocate ~120 GB); 100,000 classes is ~5x ImageNet-21k
MAX_RESOLUTION = 1024
MAX_CLASSES = 100_000

if TYPE_CHECKING:
    import torch.nn as nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never below 90% of `value` (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def conv_out(size: int, k: int, s: int) -> int:
    """Spatial output size of a 'same'-padded conv (padding k // 2)."""
    return (size + 2 * (k // 2) - k) // s + 1


def _act(name: str) -> "nn.Module":
    import torch.nn as nn
    acts: dict[str, Callable[[], nn.Module]] = {
        "relu": lambda: nn.ReLU(inplace=True), "relu6": lambda: nn.ReLU6(inplace=True),
        "hswish": lambda: nn.Hardswish(inplace=True), "swish": lambda: nn.SiLU(inplace=True),
        "gelu": nn.GELU, "none": nn.Identity}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(acts))}")
    return acts[name]()


# ---- conv_bn_act ------------------------------------------------------------------------------
def _build_conv(cin: int, cout: int, k: int, s: int, act: str = "relu6", groups: int = 1) -> "nn.Module":
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), _act(act))


def _conv_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    _, h, w = spec.output_shape
    return h * w * p["cout"] * (p["cin"] // p.get("groups", 1)) * p["k"] * p["k"]


OPS.register("conv_bn_act", OpDef(_build_conv, _conv_macs))


def conv_spec(cin: int, cout: int, k: int, s: int, hw: tuple[int, int], act: str = "relu6") -> LayerSpec:
    h, w = hw
    return LayerSpec.make("conv_bn_act", {"cin": cin, "cout": cout, "k": k, "s": s, "act": act},
                          (cin, h, w), (cout, conv_out(h, k, s), conv_out(w, k, s)))


# ---- mbconv (inverted residual, optional squeeze-excite) --------------------------------------
def inverted_residual(cin: int, mid: int, cout: int, k: int, s: int, act: str, se_ch: int = 0,
                      gate: str = "sigmoid") -> "nn.Module":
    """[1x1 expand cin->mid + BN + act] (absent when mid == cin), depthwise kxk/s + BN + act, [squeeze-
    excite: pool, 1x1 mid->se_ch, ReLU, 1x1 se_ch->mid, `gate` (sigmoid or hardsigmoid), scale], 1x1
    project mid->cout + BN, residual add when s == 1 and cin == cout: the block of `mbconv` and `ir_block`."""
    import torch
    import torch.nn as nn

    class InvertedResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            if mid != cin:
                layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), _act(act)]
            layers += [nn.Conv2d(mid, mid, k, s, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), _act(act)]
            self.pre = nn.Sequential(*layers)
            self.se = None
            if se_ch > 0:
                self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, se_ch, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(se_ch, mid, 1), nn.Hardsigmoid() if gate == "hardsigmoid"
                                        else nn.Sigmoid())
            self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = s == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.pre(x)
            if self.se is not None:
                y = y * self.se(y)
            y = self.project(y)
            return x + y if self.residual else y

    return InvertedResidual()


def _build_mbconv(cin: int, cout: int, k: int, e: int, s: int, se: float = 0.0, act: str = "relu6") -> "nn.Module":
    # e == 1 has no expansion (mid == cin); squeeze-excite to int(cin * se) channels, sigmoid gate
    return inverted_residual(cin, cin * e, cout, k, s, act, max(1, int(cin * se)) if se > 0 else 0, "sigmoid")


def _mbconv_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid = cin * p["e"]
    expand = h * w * cin * mid if p["e"] != 1 else 0
    se = 2 * mid * max(1, int(cin * p.get("se", 0.0))) if p.get("se", 0.0) > 0 else 0
    return expand + ho * wo * mid * p["k"] * p["k"] + se + ho * wo * mid * p["cout"]


OPS.register("mbconv", OpDef(_build_mbconv, _mbconv_macs))


def mbconv_spec(cin: int, cout: int, k: int, e: int, s: int, hw: tuple[int, int], se: float = 0.0,
                act: str = "relu6") -> LayerSpec:
    h, w = hw
    params: dict[str, Any] = {"cin": cin, "cout": cout, "k": k, "e": e, "s": s}
    if se:
        params["se"] = se
    if act != "relu6":
        params["act"] = act
    return LayerSpec.make("mbconv", params, (cin, h, w), (cout, conv_out(h, k, s), conv_out(w, k, s)))


# ---- classifier head: 1x1 conv -> global pool -> linear --------------------------------------
def _build_head(cin: int, cmid: int, classes: int, act: str = "relu6") -> "nn.Module":
    import torch.nn as nn
    layers: list[nn.Module] = []
    if cmid:
        layers += [nn.Conv2d(cin, cmid, 1, bias=False), nn.BatchNorm2d(cmid), _act(act)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cmid or cin, classes)]
    return nn.Sequential(*layers)


def _head_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    feat = p["cmid"] or cin
    return h * w * cin * p["cmid"] + feat * p["classes"]


OPS.register("head", OpDef(_build_head, _head_macs))


def head_spec(cin: int, cmid: int, classes: int, hw: tuple[int, int]) -> LayerSpec:
    return LayerSpec.make("head", {"cin": cin, "cmid": cmid, "classes": classes}, (cin, *hw), (classes,))
