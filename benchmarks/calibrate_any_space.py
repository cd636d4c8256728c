"""Few-shot calibration outside nb201: time whole nets of a space on this CPU, calibrate on a few.

    python benchmarks/calibrate_any_space.py --space mbconv -o resolution=96 -o width_mult=0.5
    python benchmarks/calibrate_any_space.py --space hytra -o resolution=96 -o width=32

Times `--fit + --test` random nets of the space end to end (onnxruntime, one thread, the `cpu` clock
with its preemption correction: latency/validate.measure), calibrates `nas latency calibrate`'s blend
(latency/calibrate_select.py) on the first `--fit` nets only, and reports Spearman and MAPE of its
per-layer table on the other `--test` nets, next to each family alone. A user of a device that cannot
be profiled layer by layer does exactly this with 10 nets.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.stats import spearmanr

from latency.calibrate_select import CountCache, calibrate_table, fit_counts, measured_inputs
from latency.model import LUTModel
from latency.profile import ProfileSettings
from latency.validate import measure, sample_archs
from nas.cli.args import space_options
from search_spaces.catalog import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True)
    ap.add_argument("-o", "--space-option", action="append", default=[])
    ap.add_argument("--fit", type=int, default=10)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=0, help="nets timed interleaved per group (default 0: all in one, "
                                                          "so a change of the machine's load hits fit and test nets alike)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    space = get_space(args.space, **space_options(args.space_option))
    archs = sample_archs(space, args.fit + args.test, args.seed)
    t0 = time.process_time()
    m = measure(space, archs, ProfileSettings(warmup=3, repeats=args.repeats), joint=False, rounds=5, chunk=args.chunk,
                progress=False, clock="cpu")
    y = m.net_ms
    fit_a, fit_y, test_a, test_y = archs[:args.fit], y[:args.fit], archs[args.fit:], y[args.fit:]
    blend, table = calibrate_table(space, list(zip(fit_a, fit_y)), None, "this cpu", "benchmark")
    pred = LUTModel(space, table).predict_many(test_a)
    xs, counts, _ = measured_inputs(space, test_a, blend.roofline.graph)
    fams = blend.family_predictions(xs, counts, None)
    cc = CountCache(space, "live")
    cols_fit = cc.columns(fit_a)
    plain = fit_counts(cc.matrix(fit_a, cols_fit), fit_y).predict(cc.matrix(test_a, cols_fit))

    def score(p: np.ndarray) -> dict[str, float]:
        return {"spearman": float(spearmanr(p, test_y)[0]), "mape": float(np.mean(np.abs(p / test_y - 1)))}

    halves = m.net_halves[args.fit:]   # each test net's median over the first and the second half of its rounds
    repeat = {"spearman": float(spearmanr(halves[:, 0], halves[:, 1])[0]),
              "mape": float(np.mean(np.abs(halves[:, 0] / halves[:, 1] - 1)))}
    r = {"space": space.name, "repeatability": repeat, "chunk": args.chunk or len(archs),
         "options": space.options(), "fit_nets": args.fit, "test_nets": args.test,
         "measured_ms": [float(np.min(y)), float(np.max(y))], "clock": "cpu", "repeats": args.repeats,
         "ours": score(pred), "families": {f: score(p) | blend.summary()[f] for f, p in fams.items()},
         "counts_baseline": score(plain), "cpu_seconds": time.process_time() - t0}
    print(f"{space.name} {space.options()}: {args.fit} nets timed to fit, {args.test} to test "
          f"({r['measured_ms'][0]:.2f}-{r['measured_ms'][1]:.2f} ms, cpu clock, {args.repeats} repeats)")
    print(f"  repeatability (first vs second half of the rounds of the test nets): Spearman "
          f"{repeat['spearman']:.3f}, MAPE {100 * repeat['mape']:.1f}%")
    print(f"  ours (blend): Spearman {r['ours']['spearman']:.3f}, MAPE {100 * r['ours']['mape']:.1f}%")
    for f, s in r["families"].items():
        print(f"  {f:<16} Spearman {s['spearman']:.3f}, MAPE {100 * s['mape']:.1f}%  (cv {100 * s['cv_error']:.1f}%, "
              f"weight {s['weight']:.2f})")
    print(f"  live-op counts (plain NNLS): Spearman {r['counts_baseline']['spearman']:.3f}, "
          f"MAPE {100 * r['counts_baseline']['mape']:.1f}%")
    print(f"  cpu time {r['cpu_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=1)


if __name__ == "__main__":
    main()
