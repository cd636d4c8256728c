"""Our per-layer latency models against the measured NAS-Bench-201 devices (all 15,625 archs).

    python benchmarks/nb201_latency_models.py [--devices pixel3,raspi4,...]

For each measured device of the shipped HELP / HW-NAS-Bench data: the Spearman correlation over
all 15,625 NB201 archs between the measured latency and (a) our `pixel1` device-model table,
(b) our `cpu` onnxruntime table, (c) MACs. No fitting to these devices happens here: (a) and (b)
are models of other hardware, so this measures how far a ranking transfers across devices.
Anchor (data README, HELP Table 3): FLOPs reach 0.787 mean Spearman on HELP's six test devices.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from latency.targets import lut_model
from latency import bench_devices
from search_spaces.catalog import get_space
from search_spaces.ops import layer_macs

HELP_TEST_DEVICES = ("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", help="comma-separated (default: all 27)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    space = get_space("nb201")
    data = bench_devices.nb201_latency()
    blocks = sorted(data.index)
    archs = [space.parse(b) for b in blocks]
    codes = np.stack([space.encode(a) for a in archs])
    ours = {t: lut_model(t, space).predict_codes(codes) for t in ("pixel1", "cpu")}
    macs = np.array([sum(layer_macs(s) for s in space.layers(a)) for a in archs], dtype=float)
    devices = args.devices.split(",") if args.devices else list(data.ms)
    print(f"{'device':<15} {'pixel1 LUT':>10} {'cpu LUT':>8} {'MACs':>6}")
    rows = []
    for d in devices:
        y = np.array([data.ms[d][b] for b in blocks])
        r = [stats.spearmanr(x, y)[0] for x in (ours["pixel1"], ours["cpu"], macs)]
        rows.append((d, *r))
        print(f"{d:<15} {r[0]:>10.3f} {r[1]:>8.3f} {r[2]:>6.3f}")
    sel = [row for row in rows if row[0] in HELP_TEST_DEVICES]
    if sel:
        mean = np.mean([row[1:] for row in sel], axis=0)
        print(f"{'HELP six mean':<15} {mean[0]:>10.3f} {mean[1]:>8.3f} {mean[2]:>6.3f}   (FLOPs anchor 0.787)")
    print(f"time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
