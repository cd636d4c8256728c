"""Peak activation memory of a net at batch 1, counted from its layer specs (no torch).

The model: float32 tensors; BatchNorm folded into the conv before it and activations applied in
place (what an inference runtime does); a tensor is freed after its last use; layers run one after
the other. While a layer runs, the tensors alive are its input, its output and the intermediates of
the stage running (for the ops below, stage by stage); the net's peak is the largest of its layers'.

* ``conv_bn_act``: input + output.
* ``mbconv`` (expand 1x1 -> depthwise kxk -> [squeeze-excite] -> project 1x1 [-> + input]):
  expand: x + mid(h, w); depthwise: mid(h, w) + mid(ho, wo); SE: 2 mid(ho, wo) (``y * se(y)`` is a
  new tensor); project: mid(ho, wo) + out; with a residual the input stays alive until the add
  (x + projected + sum), and is counted in every stage it is not already part of.
* ``dwsep``: input + dw output, then dw output + output.
* ``head`` (1x1 conv -> pool -> linear): input + conv output, then the pooled and logits vectors.
* any other op (cells, attention blocks, ...): input + output of its spec. For those ops this is a
  lower bound: intermediates inside a block, and cell states kept alive across a cell's ops, are
  not counted.
"""
from __future__ import annotations

from math import prod
from typing import Callable, Iterable, Sequence

from nas.core.layer import LayerSpec

BYTES = 4   # float32


def _n(shape: Sequence[int]) -> int:
    return int(prod(shape))


def _mbconv(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    cout, ho, wo = spec.output_shape
    mid = cin * int(p["e"])
    x, out = cin * h * w, cout * ho * wo
    residual = int(p["s"]) == 1 and cin == cout
    keep = x if residual else 0
    stages = []
    if int(p["e"]) != 1:
        stages.append(x + mid * h * w)                               # x is the expand's input: counted once
        stages.append(mid * h * w + mid * ho * wo + keep)
    else:
        stages.append(x + mid * ho * wo)                             # the depthwise reads x itself
    if float(p.get("se", 0.0) or 0.0) > 0:
        stages.append(2 * mid * ho * wo + keep)
    stages.append(mid * ho * wo + out + keep)
    if residual:
        stages.append(x + 2 * out)                                   # x + y -> sum
    return max(stages)


def _dwsep(spec: LayerSpec) -> int:
    cin = spec.input_shape[0]
    _, ho, wo = spec.output_shape
    mid = cin * ho * wo
    return max(_n(spec.input_shape) + mid, mid + _n(spec.output_shape))


def _head(spec: LayerSpec) -> int:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    cmid = int(p.get("cmid") or 0)
    feat = cmid or cin
    conv = cin * h * w + cmid * h * w if cmid else 0
    pooled = (cmid * h * w if cmid else cin * h * w) + feat
    return max(conv, pooled, feat + int(p["classes"]))


def _default(spec: LayerSpec) -> int:
    return _n(spec.input_shape) + _n(spec.output_shape)


#: op -> live float32 elements at the layer's peak (ops not listed: input + output)
PEAK_ELEMENTS: dict[str, Callable[[LayerSpec], int]] = {"mbconv": _mbconv, "dwsep": _dwsep, "head": _head}


def layer_peak_elements(spec: LayerSpec) -> int:
    """Float32 elements alive at the peak of one layer (batch 1)."""
    return int(PEAK_ELEMENTS.get(spec.op, _default)(spec))


def peak_memory_mb(layers: Iterable[LayerSpec]) -> float:
    """Peak activation memory of the net made of `layers`, in MB (10^6 bytes), batch 1."""
    return max((layer_peak_elements(s) for s in layers), default=0) * BYTES / 1e6


def layer_peak_mb(spec: LayerSpec) -> float:
    return layer_peak_elements(spec) * BYTES / 1e6
