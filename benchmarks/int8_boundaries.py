"""Lone or in-net int8 layers: which sum predicts whole quantized nets? Both on the same timings.

Samples `--samples` archs (validate's sampler, `--seed`), quantizes each whole net (latency.quantize),
and times, round-robin in one interleaved session per group of `--chunk` nets (cpu clock), the nets,
the empty call, every layer as a lone quantized graph (float in / out: the int8 model before
latency/int8_context.py) and every layer as its in-net graph (uint8 in / out, priced over the exported
graph: `latency.model.layer_list` of an int8 table). Each LUT is the empty call + the sum of its layers
(minus the empty call each); drift and load hit both alike. Prints Spearman / MAPE / within 10% / bias of
both against the nets, and the nets against themselves (even vs odd runs: the noise ceiling).

    python benchmarks/int8_boundaries.py --space nb201 --samples 30
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latency.int8_context import LayerContext, feed
from latency.model import layer_list
from latency.onnx_io import export_onnx, session
from latency.profile import stats, time_interleaved
from latency.quantize import Quantizer, digits_calibration
from latency.validate import agreement, sample_archs
from nas.core.layer import LayerSpec
from nas.core.ops import build_layer
from search_spaces.catalog import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    space = get_space(args.space)
    joins = {"joins": "timed"} if space.all_join_layers() else {}
    old_of, new_of = layer_list(space, joins), layer_list(space, {**joins, "graph": "exported"})
    quant, where = Quantizer(digits_calibration(space.input_shape[-1])), LayerContext.of(space)
    archs = sample_archs(space, args.samples, args.seed)
    rng = np.random.default_rng(args.seed)
    c0 = time.process_time()
    y: list[float] = []
    pred: dict[str, list[float]] = {"lone layers": [], "in-net layers": []}
    halves: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[tuple[str, str], Path] = {}

        def lone(s: LayerSpec) -> Path:
            if ("lone", s.key) not in files:
                src = export_onnx(build_layer(s), torch.randn(1, *s.input_shape), Path(tmp) / f"{len(files)}.onnx")
                files[("lone", s.key)] = quant.quantize(src, s.input_shape, s.key)[0]
            return files[("lone", s.key)]

        def in_net(s: LayerSpec) -> Path:
            if ("net", s.key) not in files:
                files[("net", s.key)] = where.graph(lone(s), s)
            return files[("net", s.key)]
        empty = export_onnx(torch.nn.AvgPool2d(1), torch.randn(1, 8, 1, 1), Path(tmp) / "empty.onnx")
        for g in range(0, len(archs), args.chunk):
            group = archs[g:g + args.chunk]
            nets = [quant.quantize(export_onnx(space.build(a), torch.randn(1, *space.input_shape),
                                               Path(tmp) / f"net{g + j}.onnx"), space.input_shape, "net")[0]
                    for j, a in enumerate(group)]
            olds = {s.key: s for a in group for s in old_of(a)}
            news = {s.key: s for a in group for s in new_of(a)}
            paths = [empty] + [lone(s) for s in olds.values()] + [in_net(s) for s in news.values()] + nets
            sessions: list[Any] = [session(p, "CPUExecutionProvider", 1, "all") for p in paths]
            times = time_interleaved(sessions, [feed(s, rng) for s in sessions], 10, 50, 10, clock="cpu")
            med = [stats(t)[0] for t in times]
            ovh = med[0]
            lo = {k: max(0.0, m - ovh) for k, m in zip(olds, med[1:])}
            ln = {k: max(0.0, m - ovh) for k, m in zip(news, med[1 + len(olds):])}
            for j, a in enumerate(group):
                t = times[1 + len(olds) + len(news) + j]
                y.append(med[1 + len(olds) + len(news) + j])
                halves.append((float(np.median(t[::2])), float(np.median(t[1::2]))))
                pred["lone layers"].append(ovh + sum(lo[s.key] for s in old_of(a)))
                pred["in-net layers"].append(ovh + sum(ln[s.key] for s in new_of(a)))
    h = np.array(halves)
    rows = {**{k: agreement(v, y) for k, v in pred.items()}, "nets vs nets (ceiling)": agreement(h[:, 1], h[:, 0])}
    print(f"space {args.space}: {len(archs)} int8 nets (seed {args.seed}), cpu clock, {time.process_time() - c0:.0f} CPU s")
    for name, m in rows.items():
        print(f"{name:24} Spearman {m['spearman']:.3f}  MAPE {m['mape_pct']:5.1f}%  within 10% "
              f"{m['within_10_pct']:3.0f}%  bias {m['bias_pct']:+.1f}%")


if __name__ == "__main__":
    main()
