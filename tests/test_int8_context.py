"""Int8 layers timed as inside a whole quantized net (latency.int8_context) and what an int8 table
prices for an nb201 arch: checked against onnxruntime's own graph of the whole quantized net."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from latency.int8_context import LayerContext, feed
from latency.model import LUTModel, layer_list
from latency.onnx_io import export_onnx, session
from latency.quantize import Quantizer, digits_calibration
from latency.table import LatencyTable
from nas.core.ops import build_layer
from search_spaces.catalog import get_space
from search_spaces.nb201_ops import merged_edges, relu_joins

#: node 0 read by two pools (merged into one by the exporter) and a 3x3 conv: a ReLU requantization;
#: node 1 (the pool) read by a skip into node 2 and a 1x1 conv: another
MIXED = "|avg_pool_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|"
#: two zero edges of node 0 (one Mul in the graph); node 1 (a pool) read by a 3x3 conv and a pool
MIXED_B = "|avg_pool_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _net_ops(space, arch, tmp: Path) -> Counter[str]:  # type: ignore[no-untyped-def]
    import onnx
    import onnxruntime as ort
    src = export_onnx(space.build(arch), torch.randn(1, *space.input_shape), tmp / f"{arch.key}.onnx")
    q, _ = Quantizer(digits_calibration(space.input_shape[-1])).quantize(src, space.input_shape, "net")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp / "opt.onnx")).graph.node)


def test_int8_table_prices_the_kernels_of_the_whole_quantized_nb201_net(tmp_path: Path) -> None:
    """Ground truth: onnxruntime's int8 graph of whole nb201 nets (1 cell per stage). The pools it runs are
    the pools of `graph_layers` (the exporter merges two pools of one tensor: `layers` has one more per
    cell), its QLinearMul the zero joins (two `none` edges of node 0: one Mul), and its QuantizeLinear
    beyond an all-conv net's the ReLU joins (a tensor read by ReLU convs and other ops). A 40-net check
    of the same counts: pools 40/40, Muls 39/40, ReLU requantizations 40/41 (latency.int8_context)."""
    space = get_space("nb201", cells=1, resolution=8)   # the graph of a 32-px net, smaller tensors
    base = _net_ops(space, space.parse(ALL_CONV), tmp_path)
    assert not any(s.op == "nb201_relu" for s in space.join_layers(space.parse(ALL_CONV)))
    for text, relus in ((MIXED, 2), (MIXED_B, 1)):
        arch = space.parse(text)
        ops = _net_ops(space, arch, tmp_path)
        graph, joins = space.graph_layers(arch), space.join_layers(arch)
        pools = sum(s.op == "nb201_edge" and s.kwargs["op"] == "avg_pool_3x3" for s in graph)
        assert ops["QLinearAveragePool"] == pools + 2   # + the residual blocks' shortcut pools
        assert len(space.layers(arch)) - len(graph) == 3 * (text == MIXED)
        assert ops["QLinearMul"] == sum(s.op == "nb201_zero" for s in joins) == 3
        assert ops["QuantizeLinear"] - base["QuantizeLinear"] == sum(s.op == "nb201_relu" for s in joins) == 3 * relus
    # the rules on their own
    cell = space.parse(MIXED).genes
    assert merged_edges(tuple(cell), 16, 16) == (False, True, False, False, False, False)
    assert relu_joins(tuple(cell), 16, 16) == [16, 16]


def test_in_net_layer_graphs_run_only_their_own_kernels(tmp_path: Path) -> None:
    """A layer's in-net int8 graph takes and returns uint8 and runs its kernel alone (no quantize,
    dequantize or layout change: a net runs none between int8 ops), the pool in NHWC as in a net;
    the stem keeps the float input, the head the float output, a ReLU join is one requantization."""
    import onnx
    space = get_space("nb201", cells=1)
    where = LayerContext.of(space)
    quant = Quantizer(digits_calibration(32))
    want = {"nor_conv_3x3": {"QLinearConv": 1}, "avg_pool_3x3": {"QLinearAveragePool": 1},
            "nb201_sum": {"QLinearAdd": 2}, "nb201_zero": {"QLinearMul": 1},
            "nb201_relu": {"DequantizeLinear": 1, "QuantizeLinear": 1}}
    specs = {s.key: s for s in space.all_layers() + space.all_join_layers() if "@16x32x32" in s.key or "@3x" in s.key
             or s.op == "nb201_head"}
    rng = np.random.default_rng(0)
    seen = set()
    for i, s in enumerate(specs.values()):
        kind = s.kwargs.get("op", s.op) if s.op == "nb201_edge" else s.op
        if kind not in want and s.op not in ("conv_bn_act", "nb201_head") or (s.op == "nb201_sum" and s.kwargs["inputs"] != 3):
            continue
        src = export_onnx(build_layer(s), torch.randn(1, *s.input_shape), tmp_path / f"l{i}.onnx")
        q, _ = quant.quantize(src, s.input_shape, s.key)
        path = where.graph(q, s)
        nodes = onnx.load(str(path)).graph.node
        sess = session(path, "CPUExecutionProvider", 1, "all")
        x = feed(sess, rng)
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        if s.op == "conv_bn_act":   # the net's first layer: float image in, int8 tensor out (NHWC)
            assert x.dtype == np.float32 and out.dtype == np.uint8 and out.shape == (1, 32, 32, 16)
        elif s.op == "nb201_head":   # the last: logits out in float
            assert x.dtype == np.uint8 and out.dtype == np.float32 and out.shape == (1, 10)
        else:
            assert x.dtype == np.uint8 and out.dtype == np.uint8
            assert dict(Counter(n.op_type for n in nodes)) == want[kind], s.key
            if kind == "avg_pool_3x3":
                assert [a.i for a in nodes[0].attribute if a.name == "channels_last"] == [1]
        seen.add(kind)
    assert seen == set(want) | {"conv_bn_act", "nb201_head"}


def test_int8_nb201_tables_price_the_exported_graph_float_tables_do_not() -> None:
    """An int8 table (metadata graph exported, joins) prices `graph_layers` + `join_layers` per arch; a
    float table of the same entries still `layers` through the vectorised path."""
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    specs = space.all_layers() + space.all_join_layers()
    entries = {s.key: {"ms": float(rng.uniform(0.01, 1.0))} for s in specs}
    archs = [space.sample(rng) for _ in range(20)] + [space.parse(MIXED)]
    int8 = {"precision": "int8", "joins": "timed", "graph": "exported"}
    model = LUTModel(space, LatencyTable("nb201", space.options(), int8, dict(entries)))
    assert layer_list(space, int8)(archs[-1]) == space.graph_layers(archs[-1]) + space.join_layers(archs[-1])
    for a in archs:
        want = sum(entries[s.key]["ms"] for s in space.graph_layers(a) + space.join_layers(a))
        assert model.predict(a) == pytest.approx(want, rel=1e-12)
    assert not model.separable
    floats = LUTModel(space, LatencyTable("nb201", space.options(), {"precision": "float32"}, dict(entries)))
    assert floats.separable
    assert floats.predict_many(archs) == pytest.approx([sum(entries[s.key]["ms"] for s in space.layers(a))
                                                        for a in archs], rel=1e-12)
