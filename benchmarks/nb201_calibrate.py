"""`nas bench latency` as a script: few-shot calibration on every measured NAS-Bench-201 device.

    python benchmarks/nb201_calibrate.py [--devices pixel2,raspi4] [--sizes 5,10,20] [--repeats 5]
                                         [--seed 0] [--leave-out device|kind]

Thin wrapper of latency/bench_calibration.py (the same code as `nas bench latency`): each device
left out of the basis, calibrated on n random archs only, Spearman against all 15,625 measured archs;
ours next to the nearest shipped device and live-op counts, HELP's six at n=10 (HELP paper 0.932).
"""
from __future__ import annotations

import argparse

from latency.bench_calibration import DEFAULT_SIZES, LEAVE_OUT, format_leave_device_out, leave_device_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", help="comma-separated (default: all 27)")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leave-out", choices=LEAVE_OUT, default="device")
    args = ap.parse_args()
    devices = args.devices.split(",") if args.devices else None
    sizes = [int(n) for n in args.sizes.split(",")]
    print(format_leave_device_out(leave_device_out(devices, sizes, args.repeats, args.seed, args.leave_out)))


if __name__ == "__main__":
    main()
