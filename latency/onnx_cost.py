"""Cost any ONNX graph with a device model (pixel1): decompose its nodes into the model's primitives.

No converter: the graph is read with `onnx`, its tensor shapes come from ONNX shape inference (with
`--input-shape` fixing dynamic input dimensions; sizes computed at run time, which inference leaves
unknown, come from one onnxruntime run on zeros when onnxruntime is installed), and every node is mapped to
the primitives of `latency/devices/primitives.py` (dense / pointwise / depthwise conv, FC, pool,
elementwise), which the device model prices (`pixel1.primitive_ms`).

Lowering rules, the same as the LUT decompositions use (so a net of our spaces exported to ONNX is
priced like its LayerSpecs, see tests/test_onnx_cost.py):
- BatchNormalization right after a Conv / Gemm is folded (free); elsewhere it is MUL + ADD (two passes).
- Relu / Clip (ReLU6) / LeakyRelu right after a Conv, Gemm, MatMul, Add or folded BN are fused (free).
- Swish costs two passes, HardSwish (TFLite HARD_SWISH), Sigmoid / Tanh / Gelu / Erf / HardSigmoid one; Softmax reads
  its input twice; LayerNormalization is five passes and two tiny ops (pixel1_ops.layernorm).
- An Add of a constant to a MatMul / Gemm / Conv output is its bias (free); exact GELU exported as
  Div, Erf, Add, Mul, Mul is one pass.
- Gemm and MatMul with a weight operand are GEMMs; MatMul of two activations (attention) is a batch
  of products; kxk Max / Average pooling is a depthwise-shaped reduction; global pooling reads once.
- Reshape / Flatten / Squeeze / Unsqueeze / Identity / Dropout and nodes computing constants only
  (shape arithmetic) are free; Transpose / Concat / Slice / Split / Pad / Expand are one copy.
A node type outside these rules raises one `UsageError` naming every such type in the graph.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from latency.devices.pixel1_ops import act_passes, bcast, copy, layernorm
from latency.devices.primitives import F32, Primitive, eltwise, im2col_bytes
from latency.onnx_load import Shape, load_graph
from nas.core.errors import UsageError

if TYPE_CHECKING:
    import onnx


#: node types that never cost anything (views, no-ops) once shapes are static
FREE = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "Shape",
                  "ConstantOfShape", "Size", "Cast", "CastLike"})
#: node types whose outputs are constants when shapes are static
CONST_MAKERS = frozenset({"Constant", "Shape", "Size", "ConstantOfShape"})
#: producers an activation / BatchNorm can be fused into
FUSES_INTO = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"})
FUSED_ACTS = frozenset({"Relu", "Clip", "LeakyRelu"})
ONE_PASS = frozenset({"Sigmoid", "Tanh", "Gelu", "Erf", "HardSigmoid", "Relu", "Clip", "LeakyRelu", "Elu",
                      "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Softplus", "Not", "Floor", "Ceil",
                      "Round", "Sign", "Selu", "PRelu"})
TWO_OPERAND = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Greater", "Less", "And",
                         "Or", "Where", "Mod"})
COPIES = frozenset({"Transpose", "Concat", "Slice", "Split", "Pad", "Expand", "Tile", "Gather", "Resize",
                    "Upsample", "DepthToSpace", "SpaceToDepth"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeCost:
    """One ONNX node's primitives and their price on the device."""
    name: str
    op_type: str
    primitives: tuple[Primitive, ...]
    ms: float


@dataclass(frozen=True)
class GraphCost:
    nodes: tuple[NodeCost, ...]
    input_shape: Shape

    @property
    def latency_ms(self) -> float:
        return sum(n.ms for n in self.nodes)

    def breakdown(self) -> list[dict[str, Any]]:
        return [{"node": n.name, "op": n.op_type, "ms": n.ms, "primitives": [p.kind for p in n.primitives]}
                for n in self.nodes if n.primitives]


# ---- costing -------------------------------------------------------------------------------------
class _Graph:
    """Shapes, constant-ness and producers of the tensors of an inferred graph."""

    def __init__(self, model: "onnx.ModelProto") -> None:
        g = model.graph
        self.shapes: dict[str, Shape | None] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            dims = vi.type.tensor_type.shape.dim
            known = vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims)
            if known or vi.name not in self.shapes:   # a graph output's dynamic dims never hide an inferred shape
                self.shapes[vi.name] = tuple(d.dim_value for d in dims) if known else None
        self.const: set[str] = set()
        for t in g.initializer:
            self.shapes[t.name] = tuple(t.dims)
            self.const.add(t.name)
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, int] = {}
        for node in g.node:
            for o in node.output:
                self.producer[o] = node.op_type
            for i in node.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1

    def shape(self, name: str, node: Any) -> Shape:
        s = self.shapes.get(name)
        if s is None:
            raise UsageError(f"ONNX node {node.name or node.op_type!r} ({node.op_type}): the shape of tensor "
                             f"{name!r} is unknown after shape inference; give --input-shape or simplify the graph")
        return s

    def fused(self, node: Any) -> bool:
        """Is `node` (an activation or BN) folded into the op that produced its input?"""
        src = node.input[0]
        return self.producer.get(src) in FUSES_INTO and self.consumers.get(src, 0) == 1


def _numel(shape: Shape) -> int:
    return int(math.prod(shape))


def _conv(g: _Graph, node: Any, attrs: dict[str, Any]) -> list[Primitive]:
    x, w, y = g.shape(node.input[0], node), g.shape(node.input[1], node), g.shape(node.output[0], node)
    groups = int(attrs.get("group", 1))
    cin, cout = x[1], y[1]
    kernel = _numel(w[2:])
    if node.op_type == "ConvTranspose":
        macs = _numel(x[2:]) * cin * (cout // groups) * kernel
    else:
        macs = _numel(y[2:]) * cout * (cin // groups) * kernel
    nbytes = F32 * (_numel(x) + _numel(y) + _numel(w))
    kind = "dw" if groups == cin == cout and groups > 1 else ("pw" if kernel == 1 else "conv")
    if kind == "conv" and node.op_type == "Conv":
        nbytes += im2col_bytes(cin // groups, kernel, _numel(y[2:])) * x[0]
    strides = attrs.get("strides") or [1]
    return [Primitive(kind, macs * x[0], nbytes, max((int(v) for v in w[2:]), default=1), max(int(v) for v in strides),
                      F32 * _numel(x) if kind == "dw" else 0)]


def _gemm(g: _Graph, node: Any, attrs: dict[str, Any]) -> list[Primitive]:
    a, b, y = g.shape(node.input[0], node), g.shape(node.input[1], node), g.shape(node.output[0], node)
    k = a[0] if node.op_type == "Gemm" and attrs.get("transA", 0) else a[-1]
    macs = _numel(y) * k
    kind = "fc" if _numel(y[:-1]) == 1 else "pw"
    return [Primitive(kind, macs, F32 * (_numel(a) + _numel(b) + _numel(y)))]


def _pool(g: _Graph, node: Any, attrs: dict[str, Any]) -> list[Primitive]:
    """Windowed pools at the depthwise rate (k*k ops per output); global pools and reductions read once."""
    x, y = g.shape(node.input[0], node), g.shape(node.output[0], node)
    traffic = F32 * (_numel(x) + _numel(y))
    if node.op_type in ("AveragePool", "MaxPool"):
        kernel = tuple(int(v) for v in attrs.get("kernel_shape", [1]))
        return [Primitive("dw", _numel(y) * _numel(kernel), traffic, max(kernel))]
    return [Primitive("pool" if node.op_type.startswith("Global") else "eltwise", _numel(x), traffic)]


def _elementwise(g: _Graph, node: Any, attrs: dict[str, Any]) -> list[Primitive]:
    n = _numel(g.shape(node.output[0], node))
    op = node.op_type
    if op in FUSED_ACTS and g.fused(node):
        return []
    if op == "Add" and len(node.input) == 2 and any(
            g.producer.get(a) in ("MatMul", "Gemm", "Conv") and g.consumers.get(a, 0) == 1 and b in g.const
            for a, b in (node.input, node.input[::-1])):
        return []   # a bias added to a GEMM / conv output: part of TFLite's FULLY_CONNECTED / CONV_2D
    if op == "BatchNormalization":
        if g.fused(node):
            return []
        c = g.shape(node.input[0], node)[1]
        return [bcast(n, c), bcast(n, c)]
    if op == "HardSwish":
        return act_passes("hswish", n)
    if op in ONE_PASS:
        return [eltwise(n, 1)]
    if op == "Softmax" or op == "LogSoftmax":
        return [eltwise(n, 2)]
    if op in TWO_OPERAND:
        return [eltwise(n, 2)]
    return [copy(n)]   # COPIES


def _layernorm(g: _Graph, node: Any, attrs: dict[str, Any]) -> list[Primitive]:
    x = g.shape(node.input[0], node)
    axis = int(attrs.get("axis", -1)) % len(x)
    return layernorm(_numel(x[:axis]), _numel(x[axis:]))


Rule = Callable[[_Graph, Any, dict[str, Any]], list[Primitive]]
RULES: dict[str, Rule] = {
    "Conv": _conv, "ConvTranspose": _conv, "Gemm": _gemm, "MatMul": _gemm,
    "LayerNormalization": _layernorm,
    **{op: _pool for op in ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean",
                            "ReduceMax", "ReduceSum", "ReduceL2")},
    **{op: _elementwise for op in (ONE_PASS | TWO_OPERAND | COPIES
                                   | {"BatchNormalization", "HardSwish", "Softmax", "LogSoftmax"})},
}


def supported_ops() -> list[str]:
    return sorted(set(RULES) | FREE)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _gelu_glue(model: "onnx.ModelProto", g: _Graph) -> set[str]:
    """The Div / Add / Mul nodes around each Erf of an exported exact GELU (x * 0.5 * (1 + erf(x / sqrt 2))):
    one GELU pass (priced on the Erf), as TFLite's builtin GELU; returns the free nodes' first outputs."""
    by_output = {o: n for n in model.graph.node for o in n.output}
    users: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    free: set[int] = set()
    for erf in (n for n in model.graph.node if n.op_type == "Erf"):
        div = by_output.get(erf.input[0])
        if div is None or div.op_type != "Div" or not (div.input[1] in g.const or getattr(
                by_output.get(div.input[1]), "op_type", "") == "Constant"):
            continue
        chain, cur = [], erf
        while len(chain) < 3:
            nxt = users.get(cur.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type not in ("Add", "Mul"):
                break
            chain.append(nxt[0])
            cur = nxt[0]
        if [n.op_type for n in chain] in (["Add", "Mul", "Mul"], ["Add", "Mul"]):
            free |= {div.output[0], *(n.output[0] for n in chain)}
    return free


def cost_graph(model: "onnx.ModelProto", price: Callable[[Primitive], float], device: str = "pixel1") -> GraphCost:
    """Decompose every node of an inferred graph into primitives and price them with `price`."""
    g = _Graph(model)
    unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in RULES and n.op_type not in FREE})
    if unknown:
        raise UsageError(f"the {device} model cannot cost ONNX op type(s) {', '.join(unknown)}; "
                         f"it costs: {', '.join(supported_ops())}")
    free = _gelu_glue(model, g)
    # BatchNorm folded into a conv makes a following activation fused too
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and g.fused(node):
            g.producer[node.output[0]] = "Conv"
    out: list[NodeCost] = []
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        data_inputs = [x for x in node.input if x]
        if node.op_type in FREE or (node.output and node.output[0] in free) or (data_inputs and all(x in g.const for x in data_inputs)):
            if node.op_type in CONST_MAKERS or all(x in g.const for x in data_inputs):
                g.const.update(node.output)
            out.append(NodeCost(name, node.op_type, (), 0.0))
            continue
        prims = tuple(RULES[node.op_type](g, node, _attrs(node)))
        out.append(NodeCost(name, node.op_type, prims, sum(price(p) for p in prims)))
    first = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    return GraphCost(tuple(out), g.shapes.get(first.name) or ())


# ---- device models -------------------------------------------------------------------------------
def _pixel1_price(target: str = "pixel1") -> Callable[[], Callable[[Primitive], float]]:
    def factory() -> Callable[[Primitive], float]:
        from latency.devices.pixel1 import primitive_ms, session
        factor = session(target).factor
        return primitive_ms if factor == 1.0 else (lambda p: factor * primitive_ms(p))
    return factory


#: device-model targets that can cost an ONNX graph: name -> the primitive pricer's factory
DEVICE_MODELS: dict[str, Callable[[], Callable[[Primitive], float]]] = {
    "pixel1": _pixel1_price("pixel1"), "pixel1-2019": _pixel1_price("pixel1-2019")}


def predict_onnx(path: str | Path, device: str = "pixel1", input_shape: Sequence[int] | None = None) -> GraphCost:
    """Cost an ONNX model on a device-model target (UsageError on a bad file, shape, op or device)."""
    if device not in DEVICE_MODELS:
        raise UsageError(f"target {device!r} is not a device model and cannot cost an ONNX graph; "
                         f"device models: {', '.join(sorted(DEVICE_MODELS))} (or --target cpu to time it here)")
    model = load_graph(path, input_shape)
    return cost_graph(model, DEVICE_MODELS[device](), device)
