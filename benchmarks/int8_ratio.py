"""Int8 / float latency per layer kind on this CPU (onnxruntime, one thread, cpu clock), side by side.

Every distinct layer of the space (up to --per-kind of each kind) is exported once, quantized
statically to int8 (QDQ, per-channel weights, calibrated on the bundled digits: latency.quantize),
and the float graph, the int8 graph as it runs inside a whole quantized net (uint8 in / out, no
quantize / dequantize / layout change at its edges: latency.int8_context, what int8 tables price) and
the lone int8 graph (float in / out) are timed round-robin in one run; a kind's ratio is the median over
its layers of int8 ms / float ms (below 1: int8 is faster), in-net and lone. A few whole nets are timed
the same way (float vs int8 net). Join layers (nb201's node sums and zero edges, priced by int8 tables
only) are listed too.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/int8_ratio.py --space mbconv --space nasnet
"""
from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from latency.int8_context import LayerContext, feed
from latency.onnx_io import export_onnx, session
from latency.profile import stats, time_interleaved
from latency.quantize import Quantizer, digits_calibration
from latency.validate import sample_archs
from nas.core.layer import LayerSpec
from nas.core.ops import build_layer
from search_spaces.catalog import get_space


def kind(spec: LayerSpec) -> str:
    """The layer's op, with the argument that picks its main kernel (cell op, depthwise kernel size)."""
    kw = spec.kwargs
    if "op" in kw:
        return f"{spec.op}:{kw['op']}"
    if spec.op == "mbconv":
        return f"mbconv k{kw.get('k')}" + (" e1" if kw.get("e") == 1 else "")
    return spec.op


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", action="append", help="space, repeatable (default mbconv)")
    ap.add_argument("--per-kind", type=int, default=6, help="layers per kind at most (spread over the list)")
    ap.add_argument("--nets", type=int, default=3, help="whole nets per space")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.space or ["mbconv"]:
        space = get_space(name)
        quant = Quantizer(digits_calibration(space.input_shape[-1]))
        where = LayerContext.of(space)
        by_kind: dict[str, list[LayerSpec]] = defaultdict(list)
        for spec in space.all_layers() + space.all_join_layers():   # joins: nb201's node sums, zero edges
            by_kind[kind(spec)].append(spec)
        picked = {k: [v[i] for i in np.unique(np.linspace(0, len(v) - 1, min(args.per_kind, len(v))).round().astype(int))]
                  for k, v in sorted(by_kind.items())}
        archs = sample_archs(space, args.nets, 7)
        with tempfile.TemporaryDirectory() as tmp:
            # (kind, float graph, int8 in-net graph, lone int8 graph, input shape, ops left in float)
            graphs: list[tuple[str, Path, Path, Path, tuple[int, ...], list[str]]] = []
            for k, specs in picked.items():
                for spec in specs:
                    f = export_onnx(build_layer(spec), torch.randn(1, *spec.input_shape), Path(tmp) / f"{len(graphs)}.onnx")
                    q, left = quant.quantize(f, spec.input_shape, spec.key)
                    graphs.append((k, f, where.graph(q, spec), q, tuple(spec.input_shape), left))
            for a in archs:
                f = export_onnx(space.build(a), torch.randn(1, *space.input_shape), Path(tmp) / f"{len(graphs)}.onnx")
                q, left = quant.quantize(f, space.input_shape, f"net {a.key}")
                graphs.append(("whole net", f, q, q, tuple(space.input_shape), left))
            rng = np.random.default_rng(0)
            sessions = [session(p) for _, f, n, q, _, _ in graphs for p in (f, n, q)]
            inputs = [feed(s, rng) for s in sessions]   # float images; uint8 (NHWC) for in-net int8 graphs
            times = time_interleaved(sessions, inputs, warmup=5, repeats=args.repeats, rounds=args.rounds, clock="cpu")
        rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        floats: dict[str, set[str]] = defaultdict(set)
        for i, (k, *_, left) in enumerate(graphs):
            rows[k].append((stats(times[3 * i])[0], stats(times[3 * i + 1])[0], stats(times[3 * i + 2])[0]))
            floats[k].update(left)
        print(f"space {name}: int8 / float latency (onnxruntime, 1 thread, cpu clock, median of {args.repeats}; "
              f"int8 as in a net, lone: float in / out)")
        print(f"{'layer kind':34}{'n':>3}{'float ms':>10}{'int8 ms':>10}{'ratio':>8}{'min':>7}{'max':>7}{'lone':>7}"
              f"  float ops in int8")
        for k, r in rows.items():
            fl, q8, lone = (np.array([x[j] for x in r]) for j in range(3))
            ratio = q8 / fl
            print(f"{k:34}{len(r):>3}{np.median(fl):>10.3f}{np.median(q8):>10.3f}{np.median(ratio):>8.2f}"
                  f"{ratio.min():>7.2f}{ratio.max():>7.2f}{np.median(lone / fl):>7.2f}  {', '.join(sorted(floats[k])) or '-'}")


if __name__ == "__main__":
    main()
