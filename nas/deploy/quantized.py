"""Int8 ONNX export with its accuracy cost: `nas export --precision int8`, `nas train --export-int8`.

The float ONNX file is exported and checked against torch as usual (`export.export_onnx`), then
quantized statically in QDQ format with onnxruntime (`latency.quantize.Quantizer`: int8 weights
per output channel, uint8 activations, MinMax scales from calibration images of the training
split). The int8 file is kept only after it loaded and ran in onnxruntime; the held-out images are
classified by both files, and the accuracy before and after quantization (and how often the two
agree) is reported. The caller loads the images (`nas.api.export`), so this module does not import
the training package.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    from latency.quantize import Calibration

log = logging.getLogger(__name__)
#: images per onnxruntime call when classifying the held-out split
EVAL_BATCH = 64


def predict_classes(path: str | Path, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Arg-max class of every image of `x` (N x C x H x W) under the ONNX model at `path`; a model with a
    fixed batch axis gets its batch size per call (a last short batch is padded)."""
    from latency.onnx_io import run, session
    sess = session(path)
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    out = []
    for i in range(0, len(x), step):
        part = x[i:i + step].astype(np.float32)
        n = len(part)
        if isinstance(fixed, int) and fixed > 0 and n < fixed:
            part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), np.float32)])
        out.append(np.asarray(run(sess, part))[:n].argmax(axis=1))
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def export_int8(space: SearchSpace, arch: Arch, out: str | Path, calibration: "Calibration", val_x: np.ndarray,
                val_y: np.ndarray, *, seed: int = 0, state: dict[str, Any] | None = None, batch: int | None = None,
                opset: int | None = None) -> dict[str, Any]:
    """Write the int8 QDQ ONNX file of `arch` (weights `state`, else random from `seed`) to `out` and
    return what was measured: held-out accuracy of the float and the int8 file on (`val_x`, `val_y`),
    their agreement, sizes, the ops onnxruntime left in float and how the file was quantized."""
    from latency.quantize import Quantizer
    from nas.deploy.export import export_onnx, normal_permissions
    calibration.check_input(space.input_shape)
    if val_x.ndim != 4 or tuple(val_x.shape[1:]) != tuple(space.input_shape) or len(val_x) != len(val_y):
        raise UsageError(f"held-out images of shape {val_x.shape} do not fit the net's input "
                         f"{'x'.join(map(str, space.input_shape))}")
    if len(val_y) == 0:
        raise UsageError("the held-out split is empty: no accuracy to report")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        fpath, diff = export_onnx(space, arch, Path(tmp) / "float.onnx", seed, batch=batch, state=state, opset=opset)
        classes = _output_classes(fpath)
        if classes is not None and int(val_y.max()) >= classes:
            raise UsageError(f"the dataset has labels up to {int(val_y.max())} but the net has {classes} outputs; "
                             f"give the dataset it was trained on")
        qpath, left = Quantizer(calibration).quantize(fpath, space.input_shape, f"net {space.format(arch)}",
                                                      dst=Path(tmp) / "int8.onnx",
                                                      inputs=calibration.inputs(space.input_shape, len(calibration.images)))
        try:   # checked to load and run in onnxruntime before it is kept
            pred_q = predict_classes(qpath, val_x)
        except Exception as exc:   # onnxruntime's own errors are plain exceptions
            raise NasError(f"the int8 model does not run in onnxruntime ({type(exc).__name__}: {exc}); "
                           f"nothing written") from None
        pred_f = predict_classes(fpath, val_x)
        y = np.asarray(val_y)
        info = {"precision": "int8", "out": str(out), "arch": space.format(arch),
                "accuracy_float": float(np.mean(pred_f == y)), "accuracy_int8": float(np.mean(pred_q == y)),
                "agreement": float(np.mean(pred_f == pred_q)), "heldout_images": int(len(y)),
                "float_bytes": fpath.stat().st_size, "int8_bytes": qpath.stat().st_size,
                "float_ops": left, "max_abs_diff_float_vs_torch": diff,
                "quantization": {**Quantizer(calibration).describe(),
                                 "calibration": {**calibration.describe(), "images": int(len(calibration.images))}}}
        info["accuracy_drop"] = info["accuracy_float"] - info["accuracy_int8"]
        normal_permissions(qpath)
        qpath.replace(out)
    return info


def _output_classes(path: Path) -> int | None:
    import onnx
    dims = onnx.load(str(path), load_external_data=False).graph.output[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].dim_value > 0 else None


def int8_accuracy(model: Any, input_shape: tuple[int, ...], calibration: "Calibration", val_x: np.ndarray,
                  val_y: np.ndarray) -> dict[str, Any]:
    """Held-out accuracy of a trained torch `model` as float ONNX and after static int8 quantization
    (for re-scoring search finalists: `nas search --quantize-top K`); nothing is kept on disk."""
    import torch

    from latency.onnx_io import export_onnx as export_graph
    from latency.quantize import Quantizer
    with tempfile.TemporaryDirectory() as tmp:
        fpath = export_graph(model, torch.zeros(1, *input_shape), Path(tmp) / "float.onnx", dynamic_batch=True)
        qpath, left = Quantizer(calibration).quantize(fpath, input_shape, "finalist", dst=Path(tmp) / "int8.onnx",
                                                      inputs=calibration.inputs(input_shape, len(calibration.images)))
        pf, pq = predict_classes(fpath, val_x), predict_classes(qpath, val_x)
    y = np.asarray(val_y)
    return {"accuracy_float_onnx": float(np.mean(pf == y)), "accuracy_int8": float(np.mean(pq == y)),
            "int8_agreement": float(np.mean(pf == pq)), "int8_float_ops": left}
