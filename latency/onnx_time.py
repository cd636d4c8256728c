"""Time a whole ONNX model on this machine with onnxruntime (`nas latency predict --target cpu --onnx`)."""
from __future__ import annotations

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
    clock: str = "wall"    # wall | cpu (latency.clocks; cpu: corrected for preemption)
    note: str | None = None   # the clock choice made on a busy machine (latency.contention)
    load: str | None = None   # the load when timing started

    @property
    def spread(self) -> float:
        """IQR / median of the repeats (above latency.contention.NOISY_SPREAD: noisy)."""
        return self.iqr_ms / self.latency_ms if self.latency_ms > 0 else 0.0


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
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    sess = session(path, threads=threads)
    times = time_session(sess, x, settings.warmup, settings.repeats, chosen)
    med, iqr = stats(times)
    return Timing(med, iqr, shape, threads, len(times), chosen, note, load.describe() if load else None)
