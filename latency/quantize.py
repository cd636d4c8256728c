"""Int8 post-training quantization of ONNX graphs with onnxruntime, for int8 latency tables and exports.

Every graph (one layer, or a whole net) is quantized statically in QDQ format: weights int8 per
output channel, activations uint8 per tensor (U8S8, what onnxruntime's x86 kernels take: with
int8 activations its QDQ fusion left some convs in float here), scales from MinMax calibration on images of a dataset
(`Calibration`; the bundled scikit-learn digits by default). The float graph is first pre-processed
(`quant_pre_process`: shape inference and constant folding; without it the exported Conv biases
stay Constant nodes, the quantizer leaves those convs in float and a layer reads 2-6x slower than
float instead of 2x faster, measured here).

A layer's input is not an image, but its calibration data still comes from the dataset
(`Calibration.inputs`): the images resized to the layer's height and width, their channels repeated
to its channel count. The scales then differ from those inside a trained net; the int8 kernels
that run, and so the time, do not depend on the scales.

Some ops have no int8 kernel in onnxruntime's CPU provider and run in float between a dequantize
and a quantize (`float_ops`, read from the graph onnxruntime actually runs after its QDQ fusions:
AveragePool and an unfolded BatchNormalization here, Erf of GELU, ...). They do so inside a whole
quantized net too, so by default such a layer is timed that way and the caller records the ops per
layer (the table's ``float_ops``); a `strict` quantizer refuses them instead, naming the op and the
layer (`nas latency profile --int8-strict`). A graph the quantizer itself fails on is always an error.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.core.errors import NasError, UsageError

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8")
QUANT_FORMAT = "QDQ"
#: ops that move or reshape data without arithmetic: never reported as left in float
DATA_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Shape", "Gather", "Constant",
                      "Identity", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Cast",
                      "Expand", "ConstantOfShape", "Range", "Pad", "Dropout"})
#: how pools, concats and other ops without weights are quantized (`ForceQuantizeNoInputCheck`):
#: onnxruntime quantizes them only when their input already is, which inside a net it is (the average
#: pool of an nb201 edge runs as QLinearAveragePool there) but in a one-layer graph it is not (the same
#: pool stayed a float AveragePool and read 3-4x faster than in the net, measured here); forcing it
#: makes a layer run the kernels it runs inside a quantized net.
LATENT_OPS = "quantized even on a float input, as inside a quantized net"
#: calibration images used per graph (MinMax needs few; each is one onnxruntime run)
CALIBRATION_IMAGES = 16
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3236   # the bundled digits after upsampling (as nas.data uses)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


class QuantizeError(UsageError):
    """A graph holds an op onnxruntime cannot quantize (and no float fallback was allowed)."""


@dataclass(frozen=True)
class Calibration:
    """Calibration images (N x C x H x W float32, normalised as the model sees them) and their name."""

    name: str
    images: np.ndarray = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.number):
            shape = getattr(x, "shape", type(x).__name__)
            raise UsageError(f"calibration dataset {self.name!r} has shape {shape}; expected images N x C x H x W")
        if not np.all(np.isfinite(x)):
            raise UsageError(f"calibration dataset {self.name!r} holds non-finite values")

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise unless these images can feed a net whose input is `shape` (C, H, W): the same channels
        (the height and width are resized)."""
        c = self.images.shape[1]
        if len(shape) != 3 or c != shape[0]:
            raise UsageError(f"calibration dataset {self.name!r} has images of shape "
                             f"{'x'.join(map(str, self.images.shape[1:]))}; the net takes "
                             f"{'x'.join(map(str, shape))} (channels must match)")

    def inputs(self, shape: Sequence[int], n: int = CALIBRATION_IMAGES) -> np.ndarray:
        """`n` calibration inputs of `shape` (no batch axis) made from the images (module docstring)."""
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.ascontiguousarray(self.images[:n], dtype=np.float32))
        shape = tuple(int(s) for s in shape)
        if len(shape) == 3:
            if x.shape[-2:] != shape[1:]:
                x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
            reps = -(-shape[0] // x.shape[1])
            return x.repeat(1, reps, 1, 1)[:, :shape[0]].numpy()
        flat = x.reshape(len(x), -1)   # token or vector inputs: the pixels, repeated to the size
        size = math.prod(shape)
        flat = flat.repeat(1, -(-size // flat.shape[1]))[:, :size]
        return flat.reshape(len(x), *shape).numpy()

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "images": int(min(len(self.images), CALIBRATION_IMAGES)), "method": "MinMax",
                "layer_inputs": "the images resized to each layer's height x width, channels repeated"}


def digits_calibration(resolution: int = 32, n: int = CALIBRATION_IMAGES, seed: int = 0) -> Calibration:
    """`n` images of scikit-learn's bundled digits (a seeded pick), upsampled to `resolution`, 3 channels,
    normalised like `nas.data`'s `digits` dataset."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    d = load_digits()
    pick = np.sort(np.random.default_rng(seed).permutation(len(d.images))[:n])
    img = torch.from_numpy(d.images[pick].astype(np.float32) / 16.0).unsqueeze(1)
    img = F.interpolate(img, size=(resolution, resolution), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return Calibration("digits", ((img - DIGITS_MEAN) / DIGITS_STD).numpy())


def npy_calibration(path: str | Path) -> Calibration:
    """Calibration images from a .npy file (N x C x H x W, already normalised)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read calibration images {path}: {exc}") from None
    return Calibration(str(path), x)


#: op-type prefixes of onnxruntime's int8 kernels (after its QDQ fusions)
INT8_KERNELS = ("QLinear", "QGemm", "QAttention", "MatMulInteger", "ConvInteger", "DynamicQuantize")
#: layout ops onnxruntime inserts around int8 (NHWC) and blocked float kernels, and max pooling,
#: which commutes with quantization and runs on the int8 tensor (NhwcMaxPool after the NHWC rewrite)
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "MaxPool", "NhwcMaxPool"})


def float_ops(path: str | Path) -> list[str]:
    """Op types that compute in float in the graph onnxruntime runs for the QDQ model at `path`
    (its optimized graph: what remains besides int8 kernels, quantize / dequantize and data moves)."""
    import tempfile

    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    return sorted({n.op_type for n in graph.node if n.op_type not in DATA_OPS and n.op_type not in LAYOUT_OPS
                   and not n.op_type.startswith(INT8_KERNELS)})


@dataclass(frozen=True)
class Quantizer:
    """Static QDQ quantization with `calibration`; `strict`: refuse graphs with ops that have no int8
    kernel instead of running those ops in float (which the caller records)."""

    calibration: Calibration
    strict: bool = False
    per_channel: bool = True

    def describe(self) -> dict[str, Any]:
        return {"precision": "int8", "quant_format": QUANT_FORMAT,
                "weights": "int8 symmetric, per channel" if self.per_channel else "int8 symmetric, per tensor",
                "activations": "uint8, per tensor (U8S8: onnxruntime's x86 int8 kernels; with int8 activations it left some convs in float)", "calibration": self.calibration.describe(),
                "float_fallback": not self.strict, "latent_ops": LATENT_OPS}

    def quantize(self, src: str | Path, input_shape: Sequence[int], label: str, dst: str | Path | None = None,
                 inputs: np.ndarray | None = None) -> tuple[Path, list[str]]:
        """Quantize the float ONNX graph `src` (one input of `input_shape` without batch; `label` names it
        in errors) to `dst` (default: next to it, `.int8.onnx`) -> (path, ops left in float).
        `inputs`: calibration batch to use instead of `calibration.inputs(input_shape)`."""
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
        src = Path(src)
        dst = Path(dst) if dst is not None else src.with_suffix(".int8.onnx")
        pre = src.with_suffix(".pre.onnx")
        data = self.calibration.inputs(input_shape) if inputs is None else inputs
        name = onnx.load(str(src), load_external_data=False).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{name: x[None].astype(np.float32)} for x in data])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)   # the quantizer logs advice through the root logger
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"ForceQuantizeNoInputCheck": True})
        except NasError:
            raise
        except Exception as exc:   # onnxruntime raises plain exceptions for graphs it cannot handle
            raise QuantizeError(f"onnxruntime cannot quantize {label}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        finally:
            root.setLevel(level)
            pre.unlink(missing_ok=True)
        left = float_ops(dst)
        if left and self.strict:
            dst.unlink(missing_ok=True)
            raise QuantizeError(f"onnxruntime cannot quantize op {', '.join(left)} of {label} (no int8 kernel on "
                                f"the CPU provider); without --int8-strict such ops run in float between "
                                f"dequantize and quantize, recorded per layer in the table")
        return dst, left


def quantizer_of(metadata: dict[str, Any], calibration: Calibration | None = None,
                 resolution: int = 32) -> Quantizer | None:
    """The quantizer an int8 table was profiled with (None for a float table). Its calibration
    images are `calibration` when given, else the bundled digits when the table used them; any
    other dataset must be given again (the table records only its name)."""
    if metadata.get("precision", "float32") == "float32":
        return None
    check_precision(str(metadata.get("precision")))
    info = metadata.get("quantization") or {}
    if calibration is None:
        used = (info.get("calibration") or {}).get("dataset", "digits")
        if used != "digits":
            raise UsageError(f"the table was calibrated on dataset {used!r}; give it again with --dataset")
        calibration = digits_calibration(resolution)
    return Quantizer(calibration, strict=not info.get("float_fallback", True))
