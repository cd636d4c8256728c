"""`nas latency predict --onnx --target cpu` under load: --clock auto against the wall clock.

    python benchmarks/onnx_clock_policy.py [--repeats 30]

Exports a few whole nets (MobileNetV2-like and Single-Path NAS of `mbconv` at 160 px, a `hytra`
preset at 128 px), then for each: the reference (median thread-CPU time of one onnxruntime thread,
`latency.profile.time_session` on the cpu clock, its own session), `predict_onnx` with the default
`--clock auto`, and with `--clock wall`. Prints each as a ratio to the reference, with the load.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from latency.onnx_io import export_onnx, session
    from latency.profile import stats, time_session
    from nas.api_latency import predict_onnx
    from search_spaces.catalog import get_space
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    nets = [("mbconv", {"resolution": 160}, "mobilenetv2-like"), ("mbconv", {"resolution": 160}, "single-path-nas"),
            ("hytra", {"resolution": 128}, None)]
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for name, options, preset in nets:
            space = get_space(name, **options)
            arch = space.parse_any(preset) if preset else space.sample(np.random.default_rng(0))
            shape = (1, *space.input_shape)
            path = export_onnx(space.build(arch), torch.zeros(*shape), Path(tmp) / f"{name}.onnx")
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            ref, _ = stats(time_session(session(path, threads=1), x, 5, args.repeats, "cpu"))
            auto = predict_onnx(str(path), ["cpu"], repeats=args.repeats)["targets"]["cpu"]
            wall = predict_onnx(str(path), ["cpu"], repeats=args.repeats, clock="wall")["targets"]["cpu"]
            print(f"{name} {preset or 'sample'} {options}: thread-CPU reference {ref:.2f} ms; auto ({auto['clock']}) "
                  f"{auto['latency_ms'] / ref:.2f}x, spread {100 * auto['spread']:.0f}%; wall "
                  f"{wall['latency_ms'] / ref:.2f}x, spread {100 * wall['spread']:.0f}%  [{auto['load']}]")


if __name__ == "__main__":
    main()
