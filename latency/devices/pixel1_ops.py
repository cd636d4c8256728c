"""Pixel 1 decompositions of the ops of the nasnet, hytra and vit_resnas spaces (see PIXEL1.md).

Imported by `pixel1.py`; registers every entry of `EXTRA_OPS` through the `register_op` extension
point of `primitives.py`. Nothing here changes the
calibrated constants: each op is written as primitives of the calibrated model (dense / pointwise /
depthwise conv, FC, pool, elementwise), priced with the constants fitted on MBConv CNNs. The cell
ops (separable, dilated, factorized convs, pooling) are close to that calibration set and are
checked against NASNet-A mobile's published Pixel 1 latency (`search_spaces.reference_nets.cell_held_out`, never fitted on). The attention, LayerNorm, softmax and GELU
terms are extrapolations: there is no published Pixel 1 latency of a transformer to check them.

Lowering assumptions (TFLite float32, batch 1, NHWC), shared by all ops:
- BatchNorm after a conv is folded and ReLU / ReLU6 after a conv or an ADD is fused (free). A ReLU
  that *precedes* a conv (the ReLU-conv-BN cell ops) is its own pass over the input. Swish / hard-
  swish are two passes (LOGISTIC or HARD_SWISH parts + MUL), GELU one pass (builtin GELU).
- A BatchNorm that follows no conv (after attention, after a concat) is MUL + ADD: two passes.
- A kxk pooling window is a depthwise-shaped reduction: k*k ops per output at the depthwise rate
  (`window_pool`, kind `dw`), plus its memory traffic.
- Dilation does not change MACs; dilated convs are priced as undilated ones (TFLite's conv and
  depthwise kernels take a dilation factor).
- Token matmuls (QKV, projection, MLP) are GEMMs with one row per token (kind `pw`); the q.k and
  attn.v batch matmuls are GEMMs too. Softmax reads its input twice and writes once.
- LayerNorm has no fused TFLite kernel: it is lowered as mean, squared difference, mean,
  rsqrt of the variance (+eps), then x * scale and + shift (5 full passes, 2 tiny ops).
- Head split / merge, class-token concat and slices are one copy each (TRANSPOSE, CONCATENATION,
  STRIDED_SLICE); reshapes between (N, D) tokens and an NHWC grid are free.
"""
from __future__ import annotations

from typing import Callable

from latency.devices.primitives import (DECOMPOSE, F32, Primitive, act_passes, conv2d, eltwise, global_pool, im2col_bytes,
                                       linear, register_op)
from nas.core.layer import LayerSpec

Decomposition = Callable[[LayerSpec], list[Primitive]]


# ---- extra primitives (built from the calibrated kinds) -------------------------------------------
def conv_rect(cin: int, cout: int, kh: int, kw: int, sh: int, sw: int, h: int, w: int) -> Primitive:
    """A dense 'same'-padded kh x kw conv with strides (sh, sw), e.g. the 1x7 / 7x1 pair."""
    ho, wo = (h - 1) // sh + 1, (w - 1) // sw + 1
    return Primitive("conv", ho * wo * cout * cin * kh * kw, F32 * (cin * h * w + cout * ho * wo + cout * cin * kh * kw)
                     + im2col_bytes(cin, kh * kw, ho * wo))


def window_pool(c: int, k: int, s: int, h: int, w: int) -> Primitive:
    """A kxk max / average pool: k*k window ops per output at the depthwise rate, no weights."""
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    return Primitive("dw", ho * wo * c * k * k, F32 * (c * h * w + c * ho * wo))


def gemm(rows: int, cin: int, cout: int) -> Primitive:
    """A token-wise linear layer on `rows` tokens: a 1x1 conv on a rows x 1 map."""
    return conv2d(cin, cout, 1, 1, rows, 1)


def matmul(batch: int, m: int, k: int, n: int) -> Primitive:
    """`batch` independent (m x k) @ (k x n) products of activations (no weights)."""
    return Primitive("pw", batch * m * k * n, F32 * batch * (m * k + k * n + m * n))


def copy(n: int) -> Primitive:
    """A layout copy of n values (transpose, concat, slice, pad, shift)."""
    return eltwise(n, operands=1)


def bcast(n: int, small: int) -> Primitive:
    """x (n values) op a broadcast operand of `small` values (per-token or per-channel)."""
    return Primitive("eltwise", n, F32 * (2 * n + small))


def reduce_mean(rows: int, d: int) -> Primitive:
    return Primitive("eltwise", rows * d, F32 * (rows * d + rows))


def layernorm(rows: int, d: int) -> list[Primitive]:
    return [reduce_mean(rows, d), bcast(rows * d, rows), reduce_mean(rows, d), eltwise(rows, 1),
            eltwise(rows, 1), bcast(rows * d, rows), bcast(rows * d, rows)]


def attention_core(n: int, heads: int, head_dim: int) -> list[Primitive]:
    """From the QKV GEMM's output to the merged heads: split, scale, q.k, softmax, attn.v, merge."""
    inner = heads * head_dim
    return [copy(3 * n * inner), bcast(n * inner, 1), matmul(heads, n, head_dim, n),
            eltwise(heads * n * n, 2), matmul(heads, n, n, head_dim), copy(n * inner)]


# ---- nasnet / darts cell ops (search_spaces/cell_ops.py) -------------------------------------------
def _factorized_reduce(cin: int, cout: int, h: int, w: int) -> list[Primitive]:
    """ReLU, shift (pad + slice), two 1x1/2 convs to cout/2, concat, BN after the concat."""
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = cout * ho * wo
    return [eltwise(cin * h * w, 1), copy(cin * (h + 1) * (w + 1)), copy(cin * h * w),
            conv2d(cin, cout // 2, 1, 2, h, w), conv2d(cin, cout - cout // 2, 1, 2, h, w), copy(out),
            eltwise(out, 1), eltwise(out, 1)]


def _cell_op(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    tok, c, s = str(p["op"]), int(p["c"]), int(p["s"])
    _, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    relu = eltwise(c * h * w, 1)   # ReLU before the conv, on the op's input
    if tok == "none":
        return [Primitive("eltwise", c * ho * wo, F32 * c * ho * wo)]   # writes zeros
    if tok == "id":
        return [] if s == 1 else _factorized_reduce(c, c, h, w)
    if tok[:3] in ("avg", "max"):
        return [window_pool(c, int(tok[3]), s, h, w)]
    if tok in ("conv1x1", "conv3x3", "conv3x3d2"):
        return [relu, conv2d(c, c, 1 if tok == "conv1x1" else 3, s, h, w)]
    if tok in ("conv1x3_3x1", "conv1x7_7x1"):
        k = int(tok[6])
        return [relu, conv_rect(c, c, 1, k, 1, s, h, w), conv_rect(c, c, k, 1, s, 1, h, wo)]
    k = int(tok[3])
    if tok.startswith("sep"):      # (ReLU, dw k/s, pw) then (ReLU fused into the pw before, dw k, pw)
        return [relu, conv2d(c, c, k, s, h, w, groups=c), conv2d(c, c, 1, 1, ho, wo),
                conv2d(c, c, k, 1, ho, wo, groups=c), conv2d(c, c, 1, 1, ho, wo)]
    if tok.startswith("dil"):      # dilation 2: same MACs as the undilated kernel
        return [relu, conv2d(c, c, k, s, h, w, groups=c), conv2d(c, c, 1, 1, ho, wo)]
    raise ValueError(f"cell_op token {tok!r} has no Pixel 1 decomposition")


def _cell_pre(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    if int(p["s"]) == 2:
        return _factorized_reduce(cin, int(p["cout"]), h, w)
    return [eltwise(cin * h * w, 1), conv2d(cin, int(p["cout"]), 1, 1, h, w)]


def _cell_combine(spec: LayerSpec) -> list[Primitive]:
    """`blocks` pairwise adds, then the concat of `concat` states (one copy of the output)."""
    p = spec.kwargs
    c, blocks, concat = int(p["c"]), int(p["blocks"]), int(p["concat"])
    _, h, w = spec.input_shape
    return [eltwise(c * h * w, 2) for _ in range(blocks)] + [copy(concat * c * h * w)]


# ---- hytra (search_spaces/hytra_ops.py) --------------------------------------------------------------
def _hytra_stem(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    _, h, w = spec.input_shape
    cout, act = int(p["cout"]), str(p.get("act", "relu"))
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return [conv2d(3, cout, 7, 2, h, w), *act_passes(act, cout * ho * wo), window_pool(cout, 3, 2, ho, wo)]


def _hytra_block(spec: LayerSpec, mixer: Callable[[int, int, int], list[Primitive]]) -> list[Primitive]:
    """1x1 reduce -> dw 3x3/s (+BN, act) -> mixer -> 1x1 expand [-> SE] + shortcut -> act."""
    p = spec.kwargs
    cin, h, w = spec.input_shape
    cout, ho, wo = spec.output_shape
    mid, s, act = int(p["mid"]), int(p["s"]), str(p.get("act", "relu"))
    n = ho * wo
    out = [conv2d(cin, mid, 1, 1, h, w), conv2d(mid, mid, 3, s, h, w, groups=mid), *act_passes(act, mid * n)]
    out += mixer(mid, ho, wo) + [conv2d(mid, cout, 1, 1, ho, wo)]
    if p.get("se"):   # like the calibrated mbconv SE: pool, FC down, FC up, scale
        rd = max(8, cout // 16)
        out += [global_pool(cout, ho, wo), linear(cout, rd), linear(rd, cout), eltwise(cout * n)]
    if s != 1 or cin != cout:   # avg-down shortcut
        out += ([window_pool(cin, 2, s, h, w)] if s != 1 else []) + [conv2d(cin, cout, 1, 1, ho, wo)]
    return out + [eltwise(cout * n, 2), *act_passes(act, cout * n)]


def _hytra_resconv(spec: LayerSpec) -> list[Primitive]:
    act = str(spec.kwargs.get("act", "relu"))
    return _hytra_block(spec, lambda mid, ho, wo: [conv2d(mid, mid, 3, 1, ho, wo), *act_passes(act, mid * ho * wo)])


def _hytra_resatt(spec: LayerSpec) -> list[Primitive]:
    act, heads = str(spec.kwargs.get("act", "relu")), int(spec.kwargs["heads"])

    def mhsa(mid: int, ho: int, wo: int) -> list[Primitive]:
        n = ho * wo   # QKV 1x1 conv, attention over all positions, then BN (MUL + ADD) and act
        return [conv2d(mid, 3 * mid, 1, 1, ho, wo), *attention_core(n, heads, mid // heads),
                bcast(mid * n, mid), bcast(mid * n, mid), *act_passes(act, mid * n)]
    return _hytra_block(spec, mhsa)


# ---- vit_resnas (search_spaces/vit_ops.py) ------------------------------------------------------------
def _tokens_out(n: int, d: int) -> list[Primitive]:
    """Prepend the class token (concat copy) and add the position embedding."""
    return [copy(n * d), eltwise(n * d, 2)]


def _vit_patch_embed(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    _, h, w = spec.input_shape
    n, d = spec.output_shape
    return [conv2d(3, int(p["dim"]), int(p["patch"]), int(p["patch"]), h, w), *_tokens_out(n, d)]


def _vit_conv_embed(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    _, h, w = spec.input_shape
    n, d = spec.output_shape
    mid, half = int(p.get("mid", 24)), int(p["patch"]) // 2
    h2, w2 = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return [conv2d(3, mid, 3, 2, h, w), conv2d(mid, mid, 3, 1, h2, w2), conv2d(mid, mid, 3, 1, h2, w2),
            eltwise(mid * h2 * w2, 2), conv2d(mid, d, half, half, h2, w2), *_tokens_out(n, d)]


def _vit_block(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    n, dim = spec.input_shape
    heads, head_dim, mlp = int(p["heads"]), int(p["head_dim"]), int(p["mlp"])
    inner = heads * head_dim
    return [*layernorm(n, dim), gemm(n, dim, 3 * inner), *attention_core(n, heads, head_dim),
            gemm(n, inner, dim), eltwise(n * dim, 2),
            *layernorm(n, dim), gemm(n, dim, mlp), eltwise(n * mlp, 1), gemm(n, mlp, dim), eltwise(n * dim, 2)]


def _vit_reduce(spec: LayerSpec) -> list[Primitive]:
    """LN, patch tokens as a grid -> conv3x3/2 + positions; class token -> linear; shortcut:
    2x2 average pool of the grid, concat the class token, zero-pad the channels; add."""
    p = spec.kwargs
    cin, cout, g = int(p["cin"]), int(p["cout"]), int(p["grid"])
    n, _ = spec.input_shape
    m, _ = spec.output_shape
    go = (g - 1) // 2 + 1
    main = [*layernorm(n, cin), copy(g * g * cin), conv2d(cin, cout, 3, 2, g, g), eltwise(go * go * cout, 2),
            linear(cin, cout), copy(m * cout)]
    short = [copy(g * g * cin), window_pool(cin, 2, 2, g, g), copy(m * cin),
             Primitive("eltwise", m * cout, F32 * (m * cin + m * cout))]
    return main + short + [eltwise(m * cout, 2)]


def _vit_head(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    dim = int(p["dim"])
    return [copy(dim), *layernorm(1, dim), linear(dim, int(p["classes"]))]


# ---- NAS-Bench-201 / NATS size space (search_spaces/nb201_ops.py) ----------------------------------
def _nb201_edge(spec: LayerSpec) -> list[Primitive]:
    """ReLU-conv-BN edges: a ReLU pass on the input (BN folded); avg pool: a 3x3 window pool; a
    width-changing skip: 1x1 conv (BN folded); a width-changing avg pool: ReLU, 1x1 conv, then pool."""
    p = spec.kwargs
    op, cin, cout = str(p["op"]), int(p["cin"]), int(p["cout"])
    _, h, w = spec.input_shape
    relu = eltwise(cin * h * w, 1)
    if op in ("nor_conv_1x1", "nor_conv_3x3"):
        return [relu, conv2d(cin, cout, 1 if op == "nor_conv_1x1" else 3, 1, h, w)]
    if op == "skip_connect":
        return [conv2d(cin, cout, 1, 1, h, w)]
    if op == "avg_pool_3x3":
        pre = [relu, conv2d(cin, cout, 1, 1, h, w)] if cin != cout else []
        return pre + [window_pool(cout, 3, 1, h, w)]
    raise ValueError(f"nb201_edge op {op!r} has no Pixel 1 decomposition")


def _nb201_resblock(spec: LayerSpec) -> list[Primitive]:
    """ReLU, 3x3/2 conv, (ReLU fused) 3x3 conv; shortcut 2x2/2 average pool + 1x1 conv; residual add."""
    cin, h, w = spec.input_shape
    cout, ho, wo = spec.output_shape
    return [eltwise(cin * h * w, 1), conv2d(cin, cout, 3, 2, h, w), conv2d(cout, cout, 3, 1, ho, wo),
            window_pool(cin, 2, 2, h, w), conv2d(cin, cout, 1, 1, ho, wo), eltwise(cout * ho * wo, 2)]


def _nb201_head(spec: LayerSpec) -> list[Primitive]:
    """BatchNorm after an add (MUL + ADD, ReLU fused), global pool, linear."""
    cin, h, w = spec.input_shape
    return [eltwise(cin * h * w, 1), eltwise(cin * h * w, 1), global_pool(cin, h, w),
            linear(cin, int(spec.kwargs["classes"]))]


#: LayerSpec op -> decomposition; `pixel1.py` registers all of them.
EXTRA_OPS: dict[str, Decomposition] = {
    "cell_op": _cell_op, "cell_pre": _cell_pre, "cell_combine": _cell_combine,
    "hytra_stem": _hytra_stem, "hytra_resconv": _hytra_resconv, "hytra_resatt": _hytra_resatt,
    "vit_patch_embed": _vit_patch_embed, "vit_conv_embed": _vit_conv_embed, "vit_block": _vit_block,
    "vit_reduce": _vit_reduce, "vit_head": _vit_head,
    "nb201_edge": _nb201_edge, "nb201_resblock": _nb201_resblock, "nb201_head": _nb201_head}

for _op, _fn in EXTRA_OPS.items():
    if _op not in DECOMPOSE:
        register_op(_op, _fn)

#: what the shipped table of each space can be trusted for (recorded in its metadata)
TRUST: dict[str, str] = {
    "mbconv": "calibrated: the op family of the published sources (MBConv CNNs); see fit / loso (leave-one-source-out).",
    "nasnet": "close to the calibration: separable / dilated / factorized convs and pooling use the calibrated "
              "CNN constants; the cell glue (ReLU passes, adds, concats) is memory traffic. Checked on NASNet-A "
              "mobile's published Pixel 1 latency (cell_held_out); never fitted on a cell net.",
    "hytra": "ResConv blocks are CNN work (calibrated kinds); ResAtt attention (QKV, q.k, softmax, attn.v, "
             "head split/merge) is extrapolated from the CNN constants: no published Pixel 1 latency checks it.",
    "vit_resnas": "extrapolated: LayerNorm, attention, softmax, GELU and token GEMMs are priced with constants "
                  "fitted on CNNs only; no published Pixel 1 latency of a vision transformer checks them. "
                  "Trust rankings more than absolute milliseconds.",
    "ofa_mbv3": "calibrated: MobileNetV3 bnecks (ir_block: SE, h-swish) and the V3 head are the ops of the "
                "MobileNetV3 nets in the calibration set (mbv3_session); 7x7 depthwise kernels use the k >= 5 rate. "
                "Speed level of the 2018 sessions (level 0), not of the MobileNetV3 session.",
    "nb201": "close to the calibration: dense 3x3 / 1x1 convs, pooling and ReLU passes of small CIFAR nets (32x32 "
             "input), priced with the CNN constants; the node sums of a cell are not timed. Not checked on a "
             "published Pixel 1 latency; the measured nb201 targets (pixel2, pixel3, ...) are ground truth.",
    "nats_sss": "close to the calibration: the nb201 ops at other widths (see nb201); not checked on a published "
                "Pixel 1 latency.",
}
