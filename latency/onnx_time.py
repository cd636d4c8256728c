"""Time a whole ONNX model on this machine with onnxruntime (`nas latency predict --target cpu --onnx`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from latency.onnx_load import load_graph
from latency.onnx_io import session
from nas.core.errors import NasError, UsageError

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Timing:
    latency_ms: float      # median of `repeats` timed runs
    iqr_ms: float          # interquartile range of those runs
    input_shape: tuple[int, ...]
    threads: int
    repeats: int
    clock: str = "wall"    # wall | cpu (latency.clocks; cpu: corrected for preemption)
    note: str | None = None   # the clock choice made on a busy machine (latency.contention)
    load: str | None = None   # the load when timing started

    @property
    def spread(self) -> float:
        """IQR / median of the repeats (above latency.contention.NOISY_SPREAD: noisy)."""
        return self.iqr_ms / self.latency_ms if self.latency_ms > 0 else 0.0


#: the largest tensor a timed model may make, as a share of the memory available
MEMORY_SHARE = 0.5


def _check_tensor_sizes(model: "onnx.ModelProto", path: str) -> None:
    """Refuse (one line) a model whose largest tensor, from shape inference, would not fit in memory:
    a 1,3,4096,4096 input to a 256-channel conv makes a 17 GB output (an allocator traceback)."""
    import math

    from onnx import helper
    from nas.core.system import available_bytes
    have = available_bytes()
    if have is None:
        return
    for vi in [*model.graph.value_info, *model.graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
            continue
        try:
            item = helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            item = 4
        size = math.prod(d.dim_value for d in t.shape.dim) * item
        if size > MEMORY_SHARE * have:
            shown = ",".join(str(d.dim_value) for d in t.shape.dim)
            raise UsageError(f"ONNX model {path!r}: tensor {vi.name!r} of shape {shown} is {size / 2 ** 30:.1f} GB, "
                             f"more than this machine can time it with ({have / 2 ** 30:.1f} GB available); "
                             f"give a smaller --input-shape")


def time_onnx(path: str | Path, input_shape: Sequence[int] | None = None, *, threads: int = 1,
              warmup: int = 10, repeats: int = 50, seed: int = 0, clock: str = "auto") -> Timing:
    """Median time of one inference (batch of the input shape) with `threads` intra-op threads, on the
    clock `clock` (wall | cpu | auto: the policy of `nas latency profile` / `validate`, cpu for one thread)."""
    import numpy as np
    from onnx import helper

    from latency.contention import current_load
    from latency.profile import ProfileSettings, resolve_clock, stats, time_session
    model = load_graph(path, input_shape)   # validates the file and fixes the input shape
    settings = ProfileSettings(threads=threads, warmup=max(0, warmup), repeats=max(1, repeats))
    chosen, note = resolve_clock(clock, settings)
    load = current_load(threads)
    inits = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    shape = tuple(d.dim_value for d in first.type.tensor_type.shape.dim)
    dtype = helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
    _check_tensor_sizes(model, str(path))
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    try:   # onnxruntime's own errors (a custom-domain op, out of memory, ...) are one line naming the file
        sess = session(path, threads=threads)
        times = time_session(sess, x, settings.warmup, settings.repeats, chosen)
    except Exception as exc:   # onnxruntime's Fail, InvalidGraph, NotImplemented ... derive from Exception only
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NasError(f"onnxruntime cannot run {str(path)!r} at input {','.join(map(str, shape))}: "
                       f"{text[:300]}") from None
    med, iqr = stats(times)
    return Timing(med, iqr, shape, threads, len(times), chosen, note, load.describe() if load else None)
