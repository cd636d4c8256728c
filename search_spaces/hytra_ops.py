"""Ops of the HyTra space (BossNAS, Li et al. 2021): stem, ResConv and ResAtt blocks.

Both candidate blocks are residual bottlenecks with the same layout, as in the BossNAS release
(``retraining_hytra/boss_candidates``): 1x1 reduction -> depthwise 3x3 with the block's stride
(the paper's implicit position encoding, which also lets either block down-sample) -> BN + act
-> the block's spatial mixer -> 1x1 expansion -> BN, added to the shortcut, then act.

- ``hytra_resconv``: the mixer is a 3x3 conv + BN + act (ResNet bottleneck); optional squeeze-
  excite (reduction 16) after the expansion, as BossNet-T0 "with SE" uses.
- ``hytra_resatt``: the mixer is global multi-head self-attention over all h*w positions + BN + act
  (BoTNet block; the depthwise conv replaces BoTNet's relative position logits, as in BossNAS).

Shortcut ("avg-down", as in all BossNet-T models): when the shape changes, 2x2 average pooling (if
stride 2) + 1x1 conv + BN; identity otherwise. Spatial sizes halve with ceil, like the pooling.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.core.layer import LayerSpec
from search_spaces.ops import OPS, OpDef, _act, conv_out

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

SE_REDUCTION = 16   # timm's SEModule default, what BossNet-T0 (attn_layer='se') uses


def _se_channels(c: int) -> int:
    return max(8, c // SE_REDUCTION)


def _half(size: int, s: int) -> int:
    return -(-size // s)


# ---- stem: conv 7x7/2 + BN + act + max-pool 3x3/2 (ResNet) -----------------------------------
def _build_stem(cout: int, act: str = "relu") -> "nn.Module":
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(3, cout, 7, 2, 3, bias=False), nn.BatchNorm2d(cout), _act(act),
                         nn.MaxPool2d(3, 2, 1))


def _stem_macs(spec: LayerSpec) -> int:
    _, h, w = spec.input_shape
    return conv_out(h, 7, 2) * conv_out(w, 7, 2) * spec.kwargs["cout"] * 3 * 49


OPS.register("hytra_stem", OpDef(_build_stem, _stem_macs))


def stem_spec(cout: int, resolution: int, act: str) -> LayerSpec:
    r = conv_out(conv_out(resolution, 7, 2), 3, 2)
    return LayerSpec.make("hytra_stem", {"cout": cout, "act": act}, (3, resolution, resolution), (cout, r, r))


# ---- shared pieces ----------------------------------------------------------------------------
def _shortcut(cin: int, cout: int, s: int) -> "nn.Module":
    import torch.nn as nn
    if s == 1 and cin == cout:
        return nn.Identity()
    pool: nn.Module = nn.AvgPool2d(2, s, ceil_mode=True, count_include_pad=False) if s != 1 else nn.Identity()
    return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


def _reduce(cin: int, mid: int, s: int, act: str) -> list["nn.Module"]:
    """1x1 reduction, then the depthwise 3x3 position encoding carrying the block's stride."""
    import torch.nn as nn
    return [nn.Conv2d(cin, mid, 1, bias=False), nn.Conv2d(mid, mid, 3, s, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid), _act(act)]


def _residual(body: "nn.Module", shortcut: "nn.Module", act: str) -> "nn.Module":
    import torch.nn as nn

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.shortcut, self.act = body, shortcut, _act(act)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.body(x) + self.shortcut(x))

    return Residual()


def _squeeze_excite(c: int) -> "nn.Module":
    import torch.nn as nn

    class SqueezeExcite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rd = _se_channels(c)
            self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, rd, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(rd, c, 1), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gate(x)

    return SqueezeExcite()


def _shortcut_macs(cin: int, cout: int, s: int, ho: int, wo: int) -> int:
    return 0 if (s == 1 and cin == cout) else ho * wo * cin * cout


# ---- ResConv -----------------------------------------------------------------------------------
def _build_resconv(cin: int, cout: int, mid: int, s: int, act: str = "relu", se: bool = False) -> "nn.Module":
    import torch.nn as nn
    layers = _reduce(cin, mid, s, act) + [
        nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), _act(act),
        nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    if se:
        layers.append(_squeeze_excite(cout))
    return _residual(nn.Sequential(*layers), _shortcut(cin, cout, s), act)


def _resconv_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid, cout = p["mid"], p["cout"]
    n = ho * wo
    se = 2 * cout * _se_channels(cout) if p.get("se") else 0
    return (h * w * cin * mid + n * mid * 9 + n * mid * mid * 9 + n * mid * cout + se
            + _shortcut_macs(cin, cout, p["s"], ho, wo))


OPS.register("hytra_resconv", OpDef(_build_resconv, _resconv_macs))


# ---- ResAtt ------------------------------------------------------------------------------------
def _mhsa(dim: int, heads: int) -> "nn.Module":
    import torch
    import torch.nn as nn

    class MHSA(nn.Module):
        """Global multi-head self-attention over the h*w positions of a (B, dim, h, w) map."""

        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
            self.heads, self.dh = heads, dim // heads
            self.scale = self.dh ** -0.5

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            q, k, v = self.qkv(x).reshape(b, 3, self.heads, self.dh, h * w).unbind(1)   # (B, heads, dh, N)
            attn = torch.softmax((q.transpose(-2, -1) * self.scale) @ k, dim=-1)     # (B, heads, N, N)
            return (v @ attn.transpose(-2, -1)).reshape(b, c, h, w)

    return MHSA()


def _build_resatt(cin: int, cout: int, mid: int, s: int, heads: int, act: str = "relu") -> "nn.Module":
    import torch.nn as nn
    layers = _reduce(cin, mid, s, act) + [
        _mhsa(mid, heads), nn.BatchNorm2d(mid), _act(act),
        nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
    return _residual(nn.Sequential(*layers), _shortcut(cin, cout, s), act)


def _resatt_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid, cout = p["mid"], p["cout"]
    n = ho * wo
    attention = n * mid * 3 * mid + 2 * n * n * mid    # qkv projection, q.k logits, attn.v
    return (h * w * cin * mid + n * mid * 9 + attention + n * mid * cout
            + _shortcut_macs(cin, cout, p["s"], ho, wo))


OPS.register("hytra_resatt", OpDef(_build_resatt, _resatt_macs))


def block_spec(op: str, cin: int, cout: int, mid: int, s: int, hw: int, act: str, se: bool = False,
               heads: int = 1) -> LayerSpec:
    """A ResConv (``op='conv'``) or ResAtt (``op='att'``) block on a square `hw` x `hw` input."""
    out = (cout, _half(hw, s), _half(hw, s))
    if op == "conv":
        return LayerSpec.make("hytra_resconv", {"cin": cin, "cout": cout, "mid": mid, "s": s, "act": act,
                                                "se": bool(se)}, (cin, hw, hw), out)
    return LayerSpec.make("hytra_resatt", {"cin": cin, "cout": cout, "mid": mid, "s": s, "heads": heads,
                                           "act": act}, (cin, hw, hw), out)
