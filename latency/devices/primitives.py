"""Layers as device-independent primitives: what a device model (pixel1, a calibrated device) costs.

Each LayerSpec op decomposes into primitives (dense conv, 1x1 pointwise conv, depthwise conv, global
pool, fully connected, elementwise) with their multiply-accumulates and float32 bytes moved. A device
model then prices each primitive kind with its own constants (latency/devices/pixel1.py).

Extension point: `DECOMPOSE` maps an op name to a function returning its primitives. The base ops
(conv_bn_act, mbconv, head, dwsep) are here; the cell, hybrid and ViT ops are registered by
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


KINDS = ("conv", "pw", "dw", "fc", "pool", "eltwise")


def conv2d(cin: int, cout: int, k: int, s: int, h: int, w: int, groups: int = 1) -> Primitive:
    """A 'same'-padded conv; kind from its shape: depthwise, 1x1 pointwise or dense kxk."""
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    macs = ho * wo * cout * (cin // groups) * k * k
    nbytes = F32 * (cin * h * w + cout * ho * wo + cout * (cin // groups) * k * k)
    kind = "dw" if groups == cin == cout and groups > 1 else ("pw" if k == 1 else "conv")
    return Primitive(kind, macs, nbytes)


def linear(cin: int, cout: int) -> Primitive:
    return Primitive("fc", cin * cout, F32 * (cin + cout + cin * cout))


def global_pool(c: int, h: int, w: int) -> Primitive:
    return Primitive("pool", c * h * w, F32 * (c * h * w + c))


def eltwise(n: int, operands: int = 2) -> Primitive:
    """Elementwise op on n outputs reading `operands` tensors (add, mul by a broadcast scale)."""
    return Primitive("eltwise", n, F32 * n * (operands + 1))


def _conv_bn_act(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    _, h, w = spec.input_shape
    return [conv2d(p["cin"], p["cout"], p["k"], p["s"], h, w, p.get("groups", 1))]


def _mbconv(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid, se = cin * p["e"], float(p.get("se", 0.0))
    out = [conv2d(cin, mid, 1, 1, h, w)] if p["e"] != 1 else []
    out.append(conv2d(mid, mid, p["k"], p["s"], h, w, groups=mid))
    if se > 0:  # squeeze-excite: pool, FC down (+relu), FC up (+sigmoid), scale the tensor
        red = max(1, int(cin * se))
        out += [global_pool(mid, ho, wo), linear(mid, red), linear(red, mid), eltwise(mid * ho * wo)]
    out.append(conv2d(mid, p["cout"], 1, 1, ho, wo))
    if p["s"] == 1 and cin == p["cout"]:
        out.append(eltwise(p["cout"] * ho * wo))
    return out


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
    "conv_bn_act": _conv_bn_act, "mbconv": _mbconv, "head": _head, "dwsep": _dwsep}


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
