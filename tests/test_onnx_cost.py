"""`nas latency predict --onnx`: any ONNX graph costed with the pixel1 primitives, or timed here on cpu.

Reference values: the LUT prediction of the same arch (the shipped pixel1 table, built from the
LayerSpec decompositions), and hand-written primitive sums for small graphs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from latency.devices.pixel1 import primitive_ms
from latency.devices.pixel1_ops import copy, gemm, layernorm, matmul
from latency.devices.primitives import conv2d, eltwise, global_pool, linear
from latency.onnx_cost import predict_onnx
from latency.onnx_load import load_graph, parse_shape
from latency.onnx_io import export_onnx
from latency.targets import lut_model
from nas.api_latency import predict_onnx as api_predict_onnx
from nas.cli.main import main
from nas.core.errors import UsageError
from search_spaces.catalog import get_space


def _init(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def _save(tmp: Path, name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
          in_shape: list[int | str], out_shape: list[int | str] | None = None) -> Path:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _cnn(tmp: Path, in_shape: list[int | str]) -> Path:
    """conv3x3 (3->8) + BN + ReLU6 -> depthwise 3x3/2 + ReLU -> HardSwish -> global pool -> FC 8->10."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"]),
             helper.make_node("Clip", ["n1", "lo", "hi"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              group=8),
             helper.make_node("Relu", ["c2"], ["a2"]),
             helper.make_node("HardSwish", ["a2"], ["h"]),
             helper.make_node("GlobalAveragePool", ["h"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits = [_init("w1", 8, 3, 3, 3), _init("w2", 8, 1, 3, 3), _init("g", 8), _init("b", 8), _init("m", 8),
             numpy_helper.from_array(np.ones(8, np.float32), "v"), numpy_helper.from_array(np.float32(0), "lo"),
             numpy_helper.from_array(np.float32(6), "hi"), _init("wf", 10, 8), _init("bf", 10)]
    return _save(tmp, "cnn", nodes, inits, in_shape)


def test_small_cnn_is_the_sum_of_its_primitives(tmp_path: Path) -> None:
    cost = predict_onnx(_cnn(tmp_path, [1, 3, 32, 32]))
    # BN folded, ReLU6 / ReLU fused, HardSwish one pass (TFLite HARD_SWISH), Flatten free
    expected = [conv2d(3, 8, 3, 1, 32, 32), conv2d(8, 8, 3, 2, 32, 32, groups=8), eltwise(8 * 16 * 16, 1),
                global_pool(8, 16, 16), linear(8, 10)]
    assert cost.latency_ms == pytest.approx(sum(primitive_ms(p) for p in expected), rel=1e-9)
    kinds = [r["primitives"] for r in cost.breakdown()]
    assert kinds == [["conv"], ["dw"], ["eltwise"], ["pool"], ["fc"]]


def test_attention_graph_uses_the_transformer_primitives(tmp_path: Path) -> None:
    """LayerNorm -> QKV-like GEMM -> q.k^T -> softmax -> attn.v on (1, 16 tokens, 32)."""
    nodes = [helper.make_node("LayerNormalization", ["x", "ls", "lb"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "wq"], ["q"]),
             helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "qt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["a"], axis=-1),
             helper.make_node("MatMul", ["a", "q"], ["y"])]
    inits = [_init("ls", 32), _init("lb", 32), _init("wq", 32, 32)]
    cost = predict_onnx(_save(tmp_path, "att", nodes, inits, [1, 16, 32]))
    expected = [*layernorm(16, 32), gemm(16, 32, 32), eltwise(16 * 32, 1), matmul(1, 16, 32, 16),
                eltwise(16 * 16, 2), matmul(1, 16, 16, 32)]
    assert cost.latency_ms == pytest.approx(sum(primitive_ms(p) for p in expected), rel=1e-9)


@pytest.mark.parametrize("preset", ["single-path-nas", pytest.param("mobilenetv2-like", marks=pytest.mark.slow),
                                    pytest.param("proxyless-mobile-k5", marks=pytest.mark.slow)])
def test_exported_mbconv_net_matches_the_lut(tmp_path: Path, preset: str) -> None:
    """Our own net exported to ONNX is priced like its LayerSpecs in the shipped pixel1 table."""
    space = get_space("mbconv")
    arch = space.parse_any(preset)
    path = export_onnx(space.build(arch), torch.zeros(1, 3, 224, 224), tmp_path / "net.onnx")
    lut = lut_model("pixel1", space).predict(arch)
    cost = predict_onnx(path)
    assert len(cost.nodes) > 150
    assert cost.latency_ms == pytest.approx(lut, rel=0.01)   # measured: equal to 1e-6 on all three presets


def test_unknown_op_is_named(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("FancyOp", ["r"], ["y"], domain="my.ops")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    path = tmp_path / "fancy.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UsageError, match="FancyOp"):
        predict_onnx(path)


def test_dynamic_spatial_shape_needs_input_shape(tmp_path: Path) -> None:
    path = _cnn(tmp_path, ["N", 3, "H", "W"])
    with pytest.raises(UsageError, match="--input-shape"):
        predict_onnx(path)
    small = predict_onnx(path, input_shape=(1, 3, 32, 32))
    assert small.latency_ms == pytest.approx(predict_onnx(_cnn(tmp_path, [1, 3, 32, 32])).latency_ms)
    assert predict_onnx(path, input_shape=(1, 3, 64, 64)).latency_ms > small.latency_ms
    assert predict_onnx(_cnn(tmp_path, ["N", 3, 32, 32])).input_shape == (1, 3, 32, 32)   # dynamic batch -> 1
    with pytest.raises(UsageError, match="has 3 dims"):
        load_graph(path, (1, 32, 32))
    with pytest.raises(UsageError):
        parse_shape("1,3,x")


def test_cpu_target_times_the_model_here(tmp_path: Path) -> None:
    path = _cnn(tmp_path, ["N", 3, "H", "W"])
    small = api_predict_onnx(str(path), ["cpu"], input_shape="1,3,16,16", repeats=20)["targets"]["cpu"]
    big = api_predict_onnx(str(path), ["cpu"], input_shape="1,3,256,256", repeats=20)["targets"]["cpu"]
    assert big["input_shape"] == [1, 3, 256, 256]
    assert big["latency_ms"] > 2 * small["latency_ms"] > 0   # 256x more pixels


@pytest.mark.parametrize("argv, needle", [
    (["--target", "pixel1", "--onnx", "{bad}"], "is not an ONNX model"),
    (["--target", "pixel1", "--onnx", "{dyn}"], "dynamic dimensions"),
    (["--target", "pixel1", "--onnx", "{fancy}"], "cannot cost ONNX op type(s) FancyOp"),
    (["--target", "cpu_tables.json", "--onnx", "{dyn}"], "not 'cpu_tables.json'; valid: pixel1, pixel1-2019, cpu"),
    (["--target", "pixel1", "--onnx", "{dyn}", "--input-shape", "1,3,0"], "--input-shape"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                      needle: str) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a protobuf at all")
    fancy = tmp_path / "fancy.onnx"
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="my.ops")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("my.ops", 1)]), str(fancy))
    files = {"bad": bad, "dyn": _cnn(tmp_path, ["N", 3, "H", "W"]), "fancy": fancy}
    args = [a.format(**files) for a in argv]
    assert main(["latency", "predict", *args]) == 2
    out, err = capsys.readouterr()
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_json_holds_latency_ms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cnn(tmp_path, [1, 3, 32, 32])
    assert main(["latency", "predict", "--target", "pixel1", "--onnx", str(path), "--json", "--breakdown"]) == 0
    out = json.loads(capsys.readouterr().out)["targets"]["pixel1"]
    assert out["latency_ms"] == pytest.approx(predict_onnx(path).latency_ms)
    assert [r["op"] for r in out["breakdown"]] == ["Conv", "Conv", "HardSwish", "GlobalAveragePool", "Gemm"]


def test_linear_bias_and_exact_gelu_lower_like_tflite(tmp_path: Path) -> None:
    """torch's Linear on tokens (MatMul + bias Add) is one GEMM; exact GELU (Div, Erf, Add, Mul, Mul) one pass."""
    half = numpy_helper.from_array(np.float32(0.5), "half")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["b", "mm"], ["h"]),
             helper.make_node("Constant", [], ["sqrt2"], value=numpy_helper.from_array(np.float32(2 ** 0.5))),
             helper.make_node("Div", ["h", "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["e1"]),
             helper.make_node("Mul", ["h", "e1"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = [_init("w", 32, 64), _init("b", 64), numpy_helper.from_array(np.float32(1), "one"), half]
    cost = predict_onnx(_save(tmp_path, "gelu", nodes, inits, [1, 16, 32]))
    expected = [gemm(16, 32, 64), eltwise(16 * 64, 1)]
    assert cost.latency_ms == pytest.approx(sum(primitive_ms(p) for p in expected), rel=1e-9)
    assert [r["op"] for r in cost.breakdown()] == ["MatMul", "Erf"]


def test_computed_shapes_are_filled_by_one_onnxruntime_run(tmp_path: Path) -> None:
    """Pad by sizes computed at run time (ONNX shape inference leaves its output unknown) still costs."""
    nodes = [helper.make_node("ConstantOfShape", ["eight"], ["pads"],
                              value=numpy_helper.from_array(np.array([1], np.int64))),
             helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Relu", ["p"], ["y"])]
    inits = [numpy_helper.from_array(np.array([8], np.int64), "eight")]
    path = _save(tmp_path, "pad", nodes, inits, [1, 2, 4, 4])
    from onnx import shape_inference

    from latency.onnx_load import _unknown_tensors
    assert "p" in _unknown_tensors(shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True))
    cost = predict_onnx(path)   # Pad: one copy of its 3 x 4 x 6 x 6 output; the ReLU after a Pad: one pass
    expected = [copy(3 * 4 * 6 * 6), eltwise(3 * 4 * 6 * 6, 1)]
    assert cost.latency_ms == pytest.approx(sum(primitive_ms(p) for p in expected), rel=1e-9)
