"""Layers as device-independent primitives: what a device model (pixel1, a calibrated device) costs.

Each LayerSpec op decomposes into primitives (dense conv, 1x1 pointwise conv, depthwise conv, global
pool, fully connected, elementwise) with their multiply-accumulates and float32 bytes moved. A device
model then prices each primitive kind with its own constants (latency/devices/pixel1.py).

Activations other than ReLU / ReLU6 (which TFLite fuses into the conv) are elementwise passes
(`act_passes`). Extension point: `DECOMPOSE` maps an op name to a function returning its primitives.
The base ops (conv_bn_act, mbconv, head, dwsep, and ir_block / v3_head for the published MobileNetV3
nets the model is fitted on) are here; the cell, hybrid and ViT ops are registered by
`pixel1_ops.py` through `register_op`. An op without an entry raises `LatencyError` naming the op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nas.core.errors import LatencyError
from nas.core.layer import LayerSpec

F32 = 4  # bytes per float32 value


# ---- primitives ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Primitive:
    kind: str       # one of KINDS
    macs: int       # multiply-accumulates (pool / eltwise: elements touched, not costed)
    nbytes: int     # float32 bytes read + written (activations in and out + weights)
    k: int = 1      # kernel size of a conv (the depthwise rate depends on it); 1 otherwise
    s: int = 1      # stride of a conv; 1 otherwise
    in_nbytes: int = 0  # float32 bytes of the input activations alone (part of nbytes); 0: not recorded

    @property
    def window_nbytes(self) -> int:
        """Row-walk traffic of a depthwise conv (`dw_window_bytes`); 0 for other kinds and for pooling
        windows (no input recorded)."""
        return dw_window_bytes(self.in_nbytes, self.k, self.s) if self.kind == "dw" else 0


KINDS = ("conv", "pw", "dw", "fc", "pool", "eltwise")


def im2col_bytes(cin_per_group: int, kernel_elems: int, out_pixels: int) -> int:
    """Traffic of the im2col buffer of a dense conv with a kernel larger than 1x1: TFLite's float conv
    unrolls each output pixel's input window into a row (written once, read once by the GEMM)."""
    return 2 * F32 * out_pixels * kernel_elems * cin_per_group


def dw_window_bytes(in_nbytes: int, k: int, s: int) -> int:
    """Traffic of a depthwise conv's row walk: TFLite's float depthwise kernel accumulates one output
    row at a time from the k input rows under it, each a full input row (W x C, all strides), so each
    of the H / s output rows reads k input rows: k / s times the input, out of the L2 (a row of a
    large input does not stay in the small L1 across output rows). Per multiply-accumulate this is
    4 s / k bytes: a stride-2 layer moves twice the bytes per MAC of a stride-1 one, and a large
    input streams (it was the largest miss of stride-2 layers on 112 / 56 px inputs)."""
    return in_nbytes * k // s


def conv2d(cin: int, cout: int, k: int, s: int, h: int, w: int, groups: int = 1) -> Primitive:
    """A 'same'-padded conv; kind from its shape: depthwise, 1x1 pointwise or dense kxk (+ im2col)."""
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    macs = ho * wo * cout * (cin // groups) * k * k
    nbytes = F32 * (cin * h * w + cout * ho * wo + cout * (cin // groups) * k * k)
    kind = "dw" if groups == cin == cout and groups > 1 else ("pw" if k == 1 else "conv")
    if kind == "conv":
        nbytes += im2col_bytes(cin // groups, k * k, ho * wo)
    return Primitive(kind, macs, nbytes, k, s, F32 * cin * h * w)


def linear(cin: int, cout: int) -> Primitive:
    return Primitive("fc", cin * cout, F32 * (cin + cout + cin * cout))


def global_pool(c: int, h: int, w: int) -> Primitive:
    return Primitive("pool", c * h * w, F32 * (c * h * w + c))


def eltwise(n: int, operands: int = 2) -> Primitive:
    """Elementwise op on n outputs reading `operands` tensors (add, mul by a broadcast scale)."""
    return Primitive("eltwise", n, F32 * n * (operands + 1))


def act_passes(act: str, n: int) -> list[Primitive]:
    """Activations that cannot be fused into the preceding conv / add (ReLU / ReLU6 are fused)."""
    if act in ("relu", "relu6", "none"):
        return []
    if act == "swish":
        return [eltwise(n, 1), eltwise(n, 2)]   # LOGISTIC, then MUL by x
    return [eltwise(n, 1)]                       # h-swish (TFLite HARD_SWISH), h-sigmoid, sigmoid, gelu: one pass


def _conv_bn_act(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    _, h, w = spec.input_shape
    cout, ho, wo = spec.output_shape
    conv = conv2d(p["cin"], p["cout"], p["k"], p["s"], h, w, p.get("groups", 1))
    return [conv, *act_passes(str(p.get("act", "relu6")), cout * ho * wo)]


def _mbconv(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid, se = cin * p["e"], float(p.get("se", 0.0))
    return _inverted_residual(cin, mid, int(p["cout"]), int(p["k"]), int(p["s"]), h, w,
                              max(1, int(cin * se)) if se > 0 else 0, str(p.get("act", "relu6")))


def _inverted_residual(cin: int, mid: int, cout: int, k: int, s: int, h: int, w: int, se_ch: int,
                       act: str, gate: str = "sigmoid") -> list[Primitive]:
    """[pw expand + act], dw k x k/s + act, [SE: pool, FC down (+relu), FC up + gate, scale],
    pw project, [residual add]. ReLU/ReLU6 are fused into the convs; other acts are passes."""
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    out = [conv2d(cin, mid, 1, 1, h, w), *act_passes(act, mid * h * w)] if mid != cin else []
    out += [conv2d(mid, mid, k, s, h, w, groups=mid), *act_passes(act, mid * ho * wo)]
    if se_ch > 0:
        out += [global_pool(mid, ho, wo), linear(mid, se_ch), linear(se_ch, mid), *act_passes(gate, mid),
                eltwise(mid * ho * wo)]
    out.append(conv2d(mid, cout, 1, 1, ho, wo))
    if s == 1 and cin == cout:
        out.append(eltwise(cout * ho * wo))
    return out


def _ir_block(spec: LayerSpec) -> list[Primitive]:
    """A MobileNetV3 bneck (explicit expansion width, SE width, activation); calibration nets only."""
    p = spec.kwargs
    cin, h, w = spec.input_shape
    return _inverted_residual(cin, int(p["mid"]), int(p["cout"]), int(p["k"]), int(p["s"]), h, w,
                              int(p.get("se_ch", 0)), str(p.get("act", "relu")), "hsigmoid")


def _v3_head(spec: LayerSpec) -> list[Primitive]:
    """MobileNetV3 head: 1x1 conv + act, global pool, 1x1 conv (no BN) + act, 1x1 conv to classes."""
    p = spec.kwargs
    cin, h, w = spec.input_shape
    c1, c2, act = int(p["c1"]), int(p["c2"]), str(p.get("act", "hswish"))
    return [conv2d(cin, c1, 1, 1, h, w), *act_passes(act, c1 * h * w), global_pool(c1, h, w),
            linear(c1, c2), *act_passes(act, c2), linear(c2, int(p["classes"]))]


def _head(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    feat = p["cmid"] or cin
    out = [conv2d(cin, p["cmid"], 1, 1, h, w)] if p["cmid"] else []
    return out + [global_pool(feat, h, w), linear(feat, p["classes"])]


def _dwsep(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    return [conv2d(cin, cin, p["k"], p["s"], h, w, groups=cin), conv2d(cin, p["cout"], 1, 1, ho, wo)]


#: op name -> primitive decomposition; the extension point for ops other spaces add.
DECOMPOSE: dict[str, Callable[[LayerSpec], list[Primitive]]] = {
    "conv_bn_act": _conv_bn_act, "mbconv": _mbconv, "head": _head, "dwsep": _dwsep,
    "ir_block": _ir_block, "v3_head": _v3_head}


def register_op(op: str, fn: Callable[[LayerSpec], list[Primitive]]) -> None:
    """Teach the model a new LayerSpec op; build its primitives with conv2d/linear/global_pool/eltwise.

    E.g. a separable conv ``sep(cin, cout, k, s)`` on a (C, H, W) input::

        register_op("sep", lambda s: [conv2d(s.kwargs["cin"], s.kwargs["cin"], s.kwargs["k"], s.kwargs["s"],
                                             *s.input_shape[1:], groups=s.kwargs["cin"]),
                                      conv2d(s.kwargs["cin"], s.kwargs["cout"], 1, 1, *s.output_shape[1:])])

    A token-shaped op (N, D) maps its matmuls to `conv2d(cin, cout, 1, 1, N, 1)` (a GEMM with
    N rows) and its softmax / norms / residuals to `eltwise`.
    """
    if op in DECOMPOSE:
        raise ValueError(f"pixel1 model already knows op {op!r}")
    DECOMPOSE[op] = fn


def decompose(spec: LayerSpec) -> list[Primitive]:
    fn = DECOMPOSE.get(spec.op)
    if fn is None:
        raise LatencyError(f"the Pixel 1 model has no decomposition for op {spec.op!r} (layer {spec.key}); "
                           f"known ops: {', '.join(sorted(DECOMPOSE))}. Add one with "
                           f"latency.devices.primitives.register_op({spec.op!r}, fn)")
    return fn(spec)
