"""`nas latency calibrate` on every measured NAS-Bench-201 device after 10 / 100 / 900 measured archs.

    python benchmarks/nb201_calibrate.py [--devices pixel2,raspi4] [--repeats 5] [--seed 0] [--basis]

Thin wrapper of nas.bench.latency (also `nas bench latency`): fits on the sampled archs only, then
Spearman against all 15,625 measured archs; mean over HELP's six test devices next to the anchors
(HELP 0.932 with 10 archs, BRP-NAS 0.789 with 900, FLOPs 0.787).
"""
from __future__ import annotations

import argparse

from nas.bench.latency import DEFAULT_SIZES, calibration_benchmark, format_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", help="comma-separated (default: all 27)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--basis", action="store_true", help="also the basis models (latency/calibrate_basis.py)")
    args = ap.parse_args()
    devices = args.devices.split(",") if args.devices else None
    print(format_benchmark(calibration_benchmark(devices, DEFAULT_SIZES, args.repeats, args.seed,
                                                            basis=args.basis)))


if __name__ == "__main__":
    main()
