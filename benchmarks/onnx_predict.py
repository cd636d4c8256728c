"""`--onnx` on pixel1: each space's preset nets exported to ONNX vs their LUT prediction, side by side,
and predictions per second (file -> ms, and cost only on a loaded graph).

    python benchmarks/onnx_predict.py [--spaces mbconv hytra vit_resnas nasnet] [--repeats 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from latency.devices.pixel1 import primitive_ms
from latency.onnx_cost import cost_graph, predict_onnx
from latency.onnx_load import load_graph
from latency.onnx_io import export_onnx
from latency.targets import lut_model
from search_spaces.catalog import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spaces", nargs="+", default=["mbconv", "hytra", "vit_resnas", "nasnet"])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'space':11}{'preset':22}{'nodes':>6}{'onnx_ms':>10}{'lut_ms':>10}{'diff_%':>8}{'file/s':>8}{'cost/s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.spaces:
            space = get_space(name)
            lut = lut_model("pixel1", space)
            for preset in sorted(space.presets):
                arch = space.parse_any(preset)
                path = export_onnx(space.build(arch), torch.zeros(1, *space.input_shape), Path(tmp) / "net.onnx")
                t = time.perf_counter()
                for _ in range(args.repeats):
                    cost = predict_onnx(path)
                per_file = args.repeats / (time.perf_counter() - t)
                graph = load_graph(path)
                t = time.perf_counter()
                for _ in range(args.repeats):
                    cost_graph(graph, primitive_ms)
                per_cost = args.repeats / (time.perf_counter() - t)
                ref = lut.predict(arch)
                print(f"{name:11}{preset:22}{len(cost.nodes):>6}{cost.latency_ms:>10.3f}{ref:>10.3f}"
                      f"{100 * (cost.latency_ms / ref - 1):>+8.2f}{per_file:>8.1f}{per_cost:>8.1f}")


if __name__ == "__main__":
    main()
