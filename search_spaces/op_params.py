"""Parameter counts of the op vocabulary, from the LayerSpec alone (no torch, nothing built).

`layer_params(spec)` is the number of trainable parameters of `build_layer(spec)` - the same
count as ``sum(p.numel() for p in build_layer(spec).parameters())`` (tests check both agree for
every op of every space). BatchNorm and LayerNorm count their affine weight and bias (running
statistics are buffers, not parameters). With `search_spaces.ops.layer_macs` this makes the
size metrics of an arch (`arch_params`, `arch_macs`) cheap enough to compute every trial.

Each function mirrors one builder in `ops.py`, `ops_extra.py`, `mbv3_ops.py`, `hytra_ops.py`, `vit_ops.py` or
`cell_ops.py`; a new op needs its count here too (`layer_params` raises naming the op otherwise).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

from nas.core.errors import UnknownNameError
from nas.core.layer import LayerSpec

if TYPE_CHECKING:
    from nas.core.arch import Arch
    from nas.core.space import SearchSpace

ParamCount = Callable[[dict[str, Any]], int]


def _norm(c: int) -> int:
    """BatchNorm2d / LayerNorm: weight + bias."""
    return 2 * c


def _conv_bn_act(p: dict[str, Any]) -> int:
    return p["cout"] * (p["cin"] // p.get("groups", 1)) * p["k"] ** 2 + _norm(p["cout"])


def _mbconv(p: dict[str, Any]) -> int:
    cin, cout, k, e = p["cin"], p["cout"], p["k"], p["e"]
    mid = cin * e
    n = cin * mid + _norm(mid) if e != 1 else 0            # expansion 1x1
    n += mid * k * k + _norm(mid)                          # depthwise kxk
    se = float(p.get("se", 0.0))
    if se > 0:                                             # squeeze-excite: two 1x1 convs with bias
        red = max(1, int(cin * se))
        n += mid * red + red + red * mid + mid
    return n + mid * cout + _norm(cout)                    # projection 1x1


def _head(p: dict[str, Any]) -> int:
    cin, cmid, classes = p["cin"], p["cmid"], p["classes"]
    n = cin * cmid + _norm(cmid) if cmid else 0
    return n + (cmid or cin) * classes + classes


def _ir_block(p: dict[str, Any]) -> int:
    cin, mid, cout, k, se_ch = p["cin"], p["mid"], p["cout"], p["k"], int(p.get("se_ch", 0))
    n = cin * mid + _norm(mid) if mid != cin else 0       # expansion 1x1 (absent when mid == cin)
    n += mid * k * k + _norm(mid)                          # depthwise kxk
    if se_ch > 0:                                          # squeeze-excite: two 1x1 convs with bias
        n += mid * se_ch + se_ch + se_ch * mid + mid
    return n + mid * cout + _norm(cout)                    # projection 1x1


def _v3_head(p: dict[str, Any]) -> int:
    # 1x1 conv + BN, 1x1 conv without BN or bias (feature mix), linear with bias
    return p["cin"] * p["c1"] + _norm(p["c1"]) + p["c1"] * p["c2"] + p["c2"] * p["classes"] + p["classes"]


def _dwsep(p: dict[str, Any]) -> int:
    cin, cout, k = p["cin"], p["cout"], p["k"]
    return cin * k * k + _norm(cin) + cin * cout + _norm(cout)


# ---- hytra ----------------------------------------------------------------------------------------
def _hytra_se_channels(c: int) -> int:
    from search_spaces.hytra_ops import _se_channels
    return _se_channels(c)


def _hytra_shortcut(p: dict[str, Any]) -> int:
    cin, cout = p["cin"], p["cout"]
    return 0 if (p["s"] == 1 and cin == cout) else cin * cout + _norm(cout)


def _hytra_reduce(p: dict[str, Any]) -> int:
    return p["cin"] * p["mid"] + p["mid"] * 9 + _norm(p["mid"])


def _hytra_stem(p: dict[str, Any]) -> int:
    return 3 * p["cout"] * 49 + _norm(p["cout"])


def _hytra_resconv(p: dict[str, Any]) -> int:
    mid, cout = p["mid"], p["cout"]
    n = _hytra_reduce(p) + mid * mid * 9 + _norm(mid) + mid * cout + _norm(cout)
    if p.get("se"):
        rd = _hytra_se_channels(cout)
        n += cout * rd + rd + rd * cout + cout
    return n + _hytra_shortcut(p)


def _hytra_resatt(p: dict[str, Any]) -> int:
    mid, cout = p["mid"], p["cout"]
    return _hytra_reduce(p) + mid * 3 * mid + _norm(mid) + mid * cout + _norm(cout) + _hytra_shortcut(p)


# ---- vit ------------------------------------------------------------------------------------------
def _tokens(p: dict[str, Any]) -> int:
    """Class token + position embedding of an embedding layer."""
    return p["dim"] + (1 + p["grid"] ** 2) * p["dim"]


def _vit_patch_embed(p: dict[str, Any]) -> int:
    return 3 * p["dim"] * p["patch"] ** 2 + p["dim"] + _tokens(p)


def _vit_conv_embed(p: dict[str, Any]) -> int:
    from search_spaces.vit_ops import CONV_EMBED_MID
    mid, dim, half = p.get("mid", CONV_EMBED_MID), p["dim"], p["patch"] // 2
    stem = 3 * mid * 9 + _norm(mid) + 2 * (mid * mid * 9 + _norm(mid))
    return stem + mid * dim * half * half + dim + _tokens(p)


def _vit_block(p: dict[str, Any]) -> int:
    dim, mlp = p["dim"], p["mlp"]
    inner = p["heads"] * p["head_dim"]
    attention = dim * 3 * inner + 3 * inner + inner * dim + dim
    return _norm(dim) + attention + _norm(dim) + dim * mlp + mlp + mlp * dim + dim


def _vit_reduce(p: dict[str, Any]) -> int:
    cin, cout = p["cin"], p["cout"]
    return _norm(cin) + cin * cout * 9 + cout + cin * cout + cout + (p["grid"] // 2) ** 2 * cout


def _vit_head(p: dict[str, Any]) -> int:
    return _norm(p["dim"]) + p["dim"] * p["classes"] + p["classes"]


# ---- cells ----------------------------------------------------------------------------------------
def _cell_op(p: dict[str, Any]) -> int:
    token, c, s = str(p["op"]), int(p["c"]), int(p["s"])
    if token in ("none", "avg3x3") or token.startswith("max") or (token == "id" and s == 1):
        return 0
    if token == "id":                                       # factorized reduce: two 1x1 convs -> c, BN
        return c * c + _norm(c)
    if token in ("conv1x1", "conv3x3", "conv3x3d2"):
        k = 1 if token == "conv1x1" else 3
        return c * c * k * k + _norm(c)
    if token in ("conv1x3_3x1", "conv1x7_7x1"):
        return 2 * c * c * int(token[6]) + _norm(c)
    k = int(token[3])
    one = c * k * k + c * c + _norm(c)                      # depthwise + pointwise + BN
    return 2 * one if token.startswith("sep") else one


def _cell_pre(p: dict[str, Any]) -> int:
    # s=1: 1x1 conv cin->cout + BN; s=2: factorized reduce, two 1x1 convs cin->cout/2 + BN(cout): same count
    return p["cin"] * p["cout"] + _norm(p["cout"])


OP_PARAMS: dict[str, ParamCount] = {
    "conv_bn_act": _conv_bn_act, "mbconv": _mbconv, "head": _head, "dwsep": _dwsep,
    "ir_block": _ir_block, "v3_head": _v3_head,
    "hytra_stem": _hytra_stem, "hytra_resconv": _hytra_resconv, "hytra_resatt": _hytra_resatt,
    "vit_patch_embed": _vit_patch_embed, "vit_conv_embed": _vit_conv_embed, "vit_block": _vit_block,
    "vit_reduce": _vit_reduce, "vit_head": _vit_head,
    "cell_op": _cell_op, "cell_pre": _cell_pre, "cell_combine": lambda p: 0,
    # nb201's join layers (node sums, zero edges; timed by int8 tables only) hold no weights
    "nb201_sum": lambda p: 0, "nb201_zero": lambda p: 0, "nb201_relu": lambda p: 0,
}


def layer_params(spec: LayerSpec) -> int:
    """Trainable parameters of the layer `spec` describes: a formula for the ops listed in OP_PARAMS,
    else counted once on the built layer (cached per spec; e.g. the benchmark spaces' few layers)."""
    fn = OP_PARAMS.get(spec.op)
    if fn is None:
        return _built_params(spec)
    return int(fn(spec.kwargs))


@lru_cache(maxsize=4096)
def _built_params(spec: LayerSpec) -> int:
    from nas.core.ops import OPS, build_layer
    if spec.op not in OPS:
        raise UnknownNameError("op", spec.op, sorted(set(OP_PARAMS) | set(OPS.names())))
    return int(sum(p.numel() for p in build_layer(spec).parameters() if p.requires_grad))


def arch_params(space: "SearchSpace", arch: "Arch") -> int:
    """Trainable parameters of ``space.build(arch)``, from its layer specs."""
    return sum(layer_params(s) for s in space.layers(arch))


def arch_macs(space: "SearchSpace", arch: "Arch") -> int:
    """Multiply-accumulates of ``space.build(arch)`` for batch 1, from its layer specs."""
    from search_spaces.ops import layer_macs
    return sum(layer_macs(s) for s in space.layers(arch))


def arch_size(space: "SearchSpace", arch: "Arch") -> tuple[int, int]:
    """(params, MACs) of `arch` from one pass over its layer specs."""
    from search_spaces.ops import layer_macs
    specs = space.layers(arch)
    return sum(layer_params(s) for s in specs), sum(layer_macs(s) for s in specs)
