"""ONNX export of torch modules, onnxruntime sessions and a model's external data files, shared by profiling,
`nas export` and ONNX costing.

Uses the TorchScript exporter (about 20x faster than the dynamo exporter here, which matters when
profiling dozens of layers) and falls back to the dynamo exporter if it fails.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from nas.core.errors import UsageError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    import torch

log = logging.getLogger(__name__)
OPSET = 17


def export_onnx(module: "torch.nn.Module", example: "torch.Tensor", path: str | Path, *, opset: int = OPSET,
                dynamic_batch: bool = False) -> Path:
    """Export `module` (put in eval mode) for input `example` to `path`, atomically; return the path.
    `dynamic_batch`: the first axis of input and output is symbolic ("batch") instead of fixed."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    from nas.core.files import clean_stale_temps
    clean_stale_temps(path)   # those of earlier writes killed before their rename
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)   # hidden
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, (example,), tmp, dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None)
            except Exception as exc:  # pragma: no cover - exercised only by ops the old exporter lacks
                import importlib.util
                if write_failed(exc, tmp) or importlib.util.find_spec("onnxscript") is None:
                    raise   # the dynamo exporter cannot help: the file could not be written, or it is missing
                log.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
                torch.onnx.export(module, (example,), tmp, dynamo=True, input_names=["input"],
                                  output_names=["output"], opset_version=opset,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_failed(exc: BaseException, tmp: str) -> bool:
    """Whether an export failed writing its file (disk full, size limit, read-only), not on an op."""
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("write", "unexpected pos", "no space", "file too large", "file size"))


def session(path: str | Path, provider: str = "CPUExecutionProvider", threads: int = 1,
            opt_level: str = "all") -> "ort.InferenceSession":
    """An onnxruntime session with fixed threads and graph optimisation level."""
    import onnxruntime as ort

    from nas.core.errors import UsageError

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if opt_level not in levels:
        raise UsageError(f"unknown graph optimisation level {opt_level!r}; valid: {', '.join(levels)}")
    available = ort.get_available_providers()
    if provider not in available:
        raise UsageError(f"onnxruntime execution provider {provider!r} is not available here; "
                         f"available: {', '.join(available)}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[opt_level]
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=[provider])


def run(sess: "ort.InferenceSession", x: Any) -> Any:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _all_tensors(graph: "onnx.GraphProto") -> Iterator["onnx.TensorProto"]:
    """The initializers and attribute tensors of `graph` and of its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_tensors(sub)


def load_external_data(model: "onnx.ModelProto", path: Path) -> None:
    """Read the weights a model keeps in external data files (beside it); a missing or short file is one
    line naming it (it was "not an ONNX model (ValidationError)")."""
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data
    need: dict[str, int] = {}
    for tensor in _all_tensors(model.graph):
        if uses_external_data(tensor):
            info = ExternalDataInfo(tensor)
            end = (info.offset or 0) + (info.length or 0)
            need[info.location] = max(need.get(info.location, 0), end)
    if not need:
        return
    for name, end in need.items():
        file = path.parent / name
        if not file.is_file():
            raise UsageError(f"ONNX model {str(path)!r} keeps its weights in the external data file {name!r}, "
                             f"which is missing (looked for {str(file)!r}); copy it beside the model")
        if file.stat().st_size < end:
            raise UsageError(f"ONNX model {str(path)!r}: its external data file {str(file)!r} holds "
                             f"{file.stat().st_size} bytes, the model reads up to byte {end} (truncated?)")
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:   # a location outside the model's folder, unreadable file ...
        raise UsageError(f"ONNX model {str(path)!r}: cannot read its external data ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
