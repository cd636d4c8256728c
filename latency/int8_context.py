"""Int8 layers timed as they run inside a whole quantized net (their "in-net" graph).

A layer quantized on its own (latency.quantize) takes a float input and returns a float output: it
pays a QuantizeLinear on entry, a DequantizeLinear on exit and, around onnxruntime's NHWC int8
kernels (QLinearConv), a Transpose each way. Inside a whole quantized net none of these run between
consecutive int8 ops: a node tensor stays uint8 in NHWC from the op that makes it to the ops that
read it (an nb201 net of 97 QLinearConv ran 2-4 Transposes in all, measured with onnxruntime 1.32).
On this 2-core Xeon VM (cpu clock) a lone 16x32x32 nor_conv_3x3 read 65 us, 43 us in-net; a 1x1 conv
30 us against 17 us: the boundary is 35-45% of a conv. An average pool alone ran onnxruntime's NCHW
QLinearAveragePool (218 us at 16x32x32), in a net the NHWC one (channels_last, 141 us).

`in_net_graph` rewrites a quantized layer graph to its in-net boundary state:

* input: the uint8 tensor the input QuantizeLinear made becomes the graph input (its consumers that
  read the float input read a DequantizeLinear of it, as in a net where some consumer is float);
  kept float when `first` (the net's own input is a float image, quantized once);
* output: the uint8 tensor the output DequantizeLinear reads becomes the graph output; kept float when
  `last` (the net's output: logits);
* layout: the uint8 input / output in NHWC (a Transpose to NCHW inside the graph, which onnxruntime's
  layout pass cancels against its own), as between int8 kernels in a net, unless NCHW leaves fewer
  Transposes in the optimized graph (a float op inside: nb201's head);
* ReLU on the input (`fold_relu`): onnxruntime's quantizer removes a ReLU whose input is read by that
  ReLU alone and clips the producer's quantized output instead, so in a net a ReLU-Conv edge reading
  a node tensor that only ReLUs read costs nothing for the ReLU; when other ops read that tensor too
  (a skip, pool or zero edge), the ReLU stays as one DequantizeLinear + QuantizeLinear shared by every
  ReLU reader (the exporter merges identical ReLUs). The layer is then timed from its ReLU's quantized
  output, and a space prices those shared requantizations as join layers (nb201: `relu_join`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.core.lazy import numpy as np  # numpy on first use

if TYPE_CHECKING:
    from nas.core.layer import LayerSpec
    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)

#: recorded in an int8 table's quantization metadata (latency.host_tables.stale_int8 checks it)
BOUNDARIES = ("in-net: uint8 input / output between layers (no quantize / dequantize / layout change), "
              "float only at the net's input and output; an input ReLU folded where the space prices "
              "shared requantizations as joins")


def _consumers(graph: Any, name: str) -> list[Any]:
    return [n for n in graph.node if name in n.input]


def _rename_input(graph: Any, old: str, new: str) -> None:
    for n in graph.node:
        for i, v in enumerate(n.input):
            if v == old:
                n.input[i] = new


def _quantized_input(graph: Any, fold_relu: bool) -> tuple[str, Any] | None:
    """(uint8 tensor the layer reads in a net, its QuantizeLinear) after removing the nodes that make it
    from the float input; None when no QuantizeLinear reads the input."""
    from onnx import helper
    x = graph.input[0].name
    cons = _consumers(graph, x)
    if fold_relu and cons and all(n.op_type == "Relu" for n in cons):
        qs = [q for r in cons for q in _consumers(graph, r.output[0])]
        if qs and all(q.op_type == "QuantizeLinear" for q in qs):
            for q in qs[1:]:
                _rename_input(graph, q.output[0], qs[0].output[0])
            for n in cons + qs:
                graph.node.remove(n)
            return qs[0].output[0], qs[0]
    qs = [n for n in cons if n.op_type == "QuantizeLinear"]
    if not qs:   # only float ops read the input (a lone ReLU): in a net they read a dequantized node tensor
        q = next((n for n in graph.node if n.op_type == "QuantizeLinear"), None)
        if q is None:
            return None
        name = f"{x}_quantized"
        graph.node.insert(0, helper.make_node("DequantizeLinear", [name, q.input[1], q.input[2]], [x],
                                              name=f"{x}_in_net_DequantizeLinear"))
        return name, q
    for q in qs[1:]:
        _rename_input(graph, q.output[0], qs[0].output[0])
    for q in qs:
        graph.node.remove(q)
    if any(n.op_type != "QuantizeLinear" for n in cons):   # float readers of the input read it dequantized
        q = qs[0]
        graph.node.insert(0, helper.make_node("DequantizeLinear", [q.output[0], q.input[1], q.input[2]], [x],
                                              name=f"{x}_in_net_DequantizeLinear"))
    return qs[0].output[0], qs[0]


def _dims(value: Any) -> list[int]:
    return [int(d.dim_value) for d in value.type.tensor_type.shape.dim]


def _around_float(graph: Any) -> None:
    """Give a graph the quantizer left all float (a lone ReLU) the QuantizeLinear + DequantizeLinear
    pairs a net has around it: its input and output are node tensors, uint8 in a quantized net."""
    from onnx import TensorProto, helper
    x, y = graph.input[0].name, graph.output[0].name
    graph.initializer.extend([helper.make_tensor("in_net_scale", TensorProto.FLOAT, [], [0.05]),
                              helper.make_tensor("in_net_zero_point", TensorProto.UINT8, [], [128]),
                              helper.make_tensor("in_net_out_zero_point", TensorProto.UINT8, [], [0])])
    _rename_input(graph, x, f"{x}_dq")
    for n in graph.node:
        for i, v in enumerate(n.output):
            if v == y:
                n.output[i] = f"{y}_float"
    graph.node.insert(0, helper.make_node("QuantizeLinear", [x, "in_net_scale", "in_net_zero_point"], [f"{x}_q"]))
    graph.node.insert(1, helper.make_node("DequantizeLinear", [f"{x}_q", "in_net_scale", "in_net_zero_point"],
                                          [f"{x}_dq"]))
    graph.node.extend([helper.make_node("QuantizeLinear", [f"{y}_float", "in_net_scale", "in_net_out_zero_point"],
                                        [f"{y}_q"]),
                       helper.make_node("DequantizeLinear", [f"{y}_q", "in_net_scale", "in_net_out_zero_point"],
                                        [y])])


def _rewrite(src: Path, first: bool, last: bool, fold_relu: bool, nhwc: bool) -> Any:
    import onnx
    from onnx import TensorProto, helper
    model = onnx.load(str(src))
    g = model.graph
    if not first and not last and not any(n.op_type == "QuantizeLinear" for n in g.node):
        _around_float(g)
    if not first:
        x = g.input[0]
        shape = _dims(x)
        found = _quantized_input(g, fold_relu)
        if found is not None:
            name = found[0]
            g.input.remove(x)
            if nhwc and len(shape) == 4:
                g.node.insert(0, helper.make_node("Transpose", [name + "_nhwc"], [name], perm=[0, 3, 1, 2],
                                                  name=f"{name}_from_nhwc"))
                name, shape = name + "_nhwc", [shape[0], shape[2], shape[3], shape[1]]
            g.input.insert(0, helper.make_tensor_value_info(name, TensorProto.UINT8, shape))
    if not last:
        y = g.output[0]
        made = [n for n in g.node if y.name in n.output]
        if made and made[0].op_type == "DequantizeLinear":
            dq = made[0]
            name, shape = dq.input[0], _dims(y)
            g.node.remove(dq)
            g.output.remove(y)
            if nhwc and len(shape) == 4:
                g.node.append(helper.make_node("Transpose", [name], [name + "_nhwc"], perm=[0, 2, 3, 1],
                                               name=f"{name}_to_nhwc"))
                name, shape = name + "_nhwc", [shape[0], shape[2], shape[3], shape[1]]
            g.output.insert(0, helper.make_tensor_value_info(name, TensorProto.UINT8, shape))
    return model


def optimize(src: str | Path, dst: str | Path) -> int:
    """Write the graph onnxruntime runs for the model at `src` (all optimizations, one thread) to `dst`;
    return how many Transpose nodes it holds."""
    import onnx
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    return sum(n.op_type == "Transpose" for n in onnx.load(str(dst)).graph.node)


def in_net_graph(src: str | Path, dst: str | Path, first: bool = False, last: bool = False,
                 fold_relu: bool = False) -> Path:
    """Write the in-net graph of the quantized layer graph `src` to `dst` (module docstring): `first` /
    `last`: the layer takes the net's float input / makes its float output; `fold_relu`: time the layer
    from its input ReLU's quantized output.

    What is written is onnxruntime's own optimized graph, optimized a second time: the first pass
    makes its int8 kernels and layout changes, the second moves the layout changes through ops that
    have an NHWC form (an average pool becomes QLinearAveragePool with channels_last, as in a net,
    where onnxruntime sees a QLinearConv beside it; the NCHW pool read 1.5x slower here)."""
    import shutil
    import tempfile

    import onnx
    src, dst = Path(src), Path(dst)
    best: tuple[int, Path] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for nhwc in (True, False):   # NHWC first: a net keeps int8 tensors NHWC; NCHW only if it is cheaper
            raw, once, twice = (Path(tmp) / f"{nhwc:d}{n}.onnx" for n in ("raw", "once", "twice"))
            onnx.save(_rewrite(src, first, last, fold_relu, nhwc), str(raw))
            optimize(raw, once)
            count = optimize(once, twice)
            if best is None or count < best[0]:
                best = (count, twice)
        assert best is not None
        shutil.copyfile(best[1], dst)
    return dst


def feed(session: Any, rng: "np.random.Generator") -> "np.ndarray":
    """A random input for `session`'s first input: uint8 for an in-net int8 graph, else float32 normal."""
    inp = session.get_inputs()[0]
    shape = [int(d) if isinstance(d, int) else 1 for d in inp.shape]
    if inp.type == "tensor(uint8)":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


@dataclass(frozen=True)
class LayerContext:
    """Where a space's layers sit in its nets, for timing their in-net int8 graphs: `net_input` is the
    net's input shape (a layer taking it is the first, fed the float image); a layer whose output is
    not C x H x W (logits) is the last; `relu_join_op`: `SearchSpace.relu_join_op`."""

    net_input: tuple[int, ...]
    relu_join_op: str | None = None

    @classmethod
    def of(cls, space: "SearchSpace") -> "LayerContext":
        return cls(tuple(int(d) for d in space.input_shape), space.relu_join_op)

    def graph(self, path: Path, spec: "LayerSpec") -> Path:
        """The in-net graph of the quantized layer graph `path` of `spec`, written beside it."""
        first = tuple(int(d) for d in spec.input_shape) == self.net_input
        last = len(spec.output_shape) != 3
        fold = self.relu_join_op is not None and spec.op != self.relu_join_op
        return in_net_graph(path, path.with_suffix(".net.onnx"), first, last, fold)
