"""Loading an ONNX graph for costing: its input shape, opset and node order checked, every tensor's
shape known (ONNX shape inference, `--input-shape` fixing dynamic input dimensions, and one
onnxruntime run on zeros for sizes computed at run time). Used by latency/onnx_cost.py (pricing) and
latency/onnx_time.py (timing); split from onnx_cost.py.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nas.core.errors import UsageError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

Shape = tuple[int, ...]


# ---- loading -------------------------------------------------------------------------------------
def parse_shape(text: str) -> Shape:
    """'1,3,224,224' -> (1, 3, 224, 224); one clear UsageError otherwise."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise UsageError(f"--input-shape {text!r} must be positive integers separated by commas, e.g. 1,3,224,224")
    return dims


#: the largest input costed or timed (float32 bytes): 1,3,100000,100000 was 120 GB
MAX_INPUT_BYTES = 1 << 30


def _check_opset_and_order(model: "onnx.ModelProto", path: str) -> None:
    """An opset newer than this onnx knows, or nodes that use a tensor before it is made (a cycle),
    are one UsageError each (opset 99 was costed silently; a cyclic graph said "give --input-shape")."""
    import onnx
    newest = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > newest:
            raise UsageError(f"ONNX model {path!r} uses opset {imp.version}; this onnx knows opsets up to {newest}")
    made = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    for node in model.graph.node:
        missing = [t for t in node.input if t not in made]
        if missing:
            raise UsageError(f"ONNX model {path!r}: node {node.name or node.op_type!r} uses {missing[0]!r} before "
                             f"any node makes it (a cycle, or nodes out of topological order)")
        made.update(node.output)


def load_graph(path: str | Path, input_shape: Sequence[int] | None = None) -> "onnx.ModelProto":
    """Read an ONNX file, fix the first input's shape and run shape inference (UsageError on bad input)."""
    import onnx
    from onnx import shape_inference

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: the file is not an ONNX model
        raise UsageError(f"{str(path)!r} is not an ONNX model ({type(exc).__name__})") from None
    from latency.onnx_io import load_external_data   # a missing or short data file: one line naming it
    load_external_data(model, p)
    if not model.graph.node:
        raise UsageError(f"{str(path)!r} is not an ONNX model (no graph nodes)")
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise UsageError(f"ONNX model {str(path)!r} has no graph input")
    if len(inputs) > 1:   # was: the second input silently ignored (pixel1) or a traceback (cpu)
        raise UsageError(f"ONNX model {str(path)!r} has {len(inputs)} inputs "
                         f"({', '.join(repr(i.name) for i in inputs[:4])}); only single-input models are costed")
    _check_opset_and_order(model, str(path))
    first = inputs[0]
    dims = first.type.tensor_type.shape.dim
    if input_shape is not None:
        if len(input_shape) != len(dims):
            raise UsageError(f"--input-shape {','.join(map(str, input_shape))} has {len(input_shape)} dims; "
                             f"input {first.name!r} has {len(dims)}")
        static = [d.dim_value for d in dims]
        if all(v > 0 for v in static[1:]) and static[1:] != [int(v) for v in input_shape][1:]:
            log.warning("--input-shape %s replaces the static input shape %s of %s",
                        ",".join(map(str, input_shape)), ",".join(map(str, static)), path)
        for d, v in zip(dims, input_shape):
            d.Clear()
            d.dim_value = int(v)
    else:
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if i == 0:   # a dynamic batch: cost batch 1
                d.Clear()
                d.dim_value = 1
                continue
            shown = ",".join(str(x.dim_value) if x.HasField("dim_value") else (x.dim_param or "?") for x in dims)
            raise UsageError(f"input {first.name!r} of {str(path)!r} has dynamic dimensions ({shown}); "
                             f"give --input-shape, e.g. --input-shape 1,3,224,224")
    elements = 1
    for d in dims:
        elements *= max(1, d.dim_value)
    if elements * 4 > MAX_INPUT_BYTES:
        shown = ",".join(str(d.dim_value) for d in dims)
        raise UsageError(f"input {first.name!r} of shape {shown} is {elements * 4 / 2 ** 30:.1f} GB as float32; "
                         f"at most {MAX_INPUT_BYTES / 2 ** 30:.0f} GB (give a smaller --input-shape)")
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise UsageError(f"ONNX shape inference failed on {str(path)!r}: {exc}".splitlines()[0]) from None
    _shapes_by_running(inferred)
    return inferred


def _unknown_tensors(model: "onnx.ModelProto") -> list[str]:
    known = {vi.name for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]
             if vi.type.tensor_type.HasField("shape")
             and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)}
    known |= {t.name for t in model.graph.initializer}
    return [o for n in model.graph.node for o in n.output if o and o not in known]


def _shapes_by_running(model: "onnx.ModelProto") -> None:
    """Fill the shapes ONNX inference leaves unknown (computed Reshape / Pad / Concat sizes) from one
    onnxruntime run on zeros, when onnxruntime is installed; otherwise leave them (costing then names them)."""
    missing = _unknown_tensors(model)
    if not missing:
        return
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import helper
    except ImportError:
        return
    probe = type(model)()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in missing)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {}
        for i in sess.get_inputs():
            vi = next(v for v in model.graph.input if v.name == i.name)
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            feed[i.name] = np.zeros(shape, helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        values = sess.run(missing, feed)
    except Exception:   # leave the shapes unknown: costing names the first tensor it cannot size
        return
    for name, value in zip(missing, values):
        arr = np.asarray(value)
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype) if arr.dtype != object else 0
        model.graph.value_info.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
