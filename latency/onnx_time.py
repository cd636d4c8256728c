"""Time a whole ONNX model on this machine with onnxruntime (`nas latency predict --target cpu --onnx`)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from latency.onnx_cost import load_graph
from latency.onnx_io import session


@dataclass(frozen=True)
class Timing:
    latency_ms: float      # median of `repeats` timed runs
    iqr_ms: float          # interquartile range of those runs
    input_shape: tuple[int, ...]
    threads: int
    repeats: int


def time_onnx(path: str | Path, input_shape: Sequence[int] | None = None, *, threads: int = 1,
              warmup: int = 10, repeats: int = 50, seed: int = 0) -> Timing:
    """Median wall time of one inference (batch of the input shape) with `threads` intra-op threads."""
    import numpy as np
    from onnx import helper

    model = load_graph(path, input_shape)   # validates the file and fixes the input shape
    inits = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    shape = tuple(d.dim_value for d in first.type.tensor_type.shape.dim)
    dtype = helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    sess = session(path, threads=threads)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(max(0, warmup)):
        sess.run(None, feed)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[2] - q[0], shape, threads, len(times))
