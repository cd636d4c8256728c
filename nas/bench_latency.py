"""`nas bench latency`: `nas latency calibrate` on every measured NB201 device, against ground truth.

For each device of latency/bench_devices.py (all 15,625 NAS-Bench-201 archs measured) and each
budget n (10 / 100 / 900 by default), sample n archs at random (seeded, `repeats` times for small
budgets), fit the calibrated device model on those n only (latency.calibrate.fit_best: the same fit
as the command), predict all 15,625 archs and take the Spearman correlation with the measurements.
Nothing is tuned on the evaluated archs: the ridge strength and the graph (built / live ops) are
chosen by leave-one-out error on the n sampled archs.

Anchors (latency/data/README.md sources; HELP, Lee et al. NeurIPS 2021, Table 3): on HELP's six test
devices HELP reaches 0.932 mean Spearman with 10 measured archs, BRP-NAS 0.789 with 900, FLOPs 0.787.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

HELP_TEST_DEVICES = ("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss")
ANCHORS = {"HELP (10 archs)": 0.932, "BRP-NAS (900 archs)": 0.789, "FLOPs": 0.787}
DEFAULT_SIZES = (10, 100, 900)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b)[0]) if np.ptp(a) > 0 else 0.0


def calibration_benchmark(devices: Sequence[str] | None = None, sizes: Sequence[int] = DEFAULT_SIZES,
                          repeats: int = 5, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Spearman over all measured archs of the model calibrated on n random archs, per device and n.

    `repeats` samples for n <= 100, one for larger n (the fit is then stable). Returns per device and n
    the mean / min / max Spearman and the graphs chosen, the mean over HELP's six test devices, MACs as
    a fit-free baseline and the anchors."""
    from latency.bench_devices import DEVICES, device, nb201_latency
    from latency.calibrate import GRAPHS, FeatureCache, fit_best
    from nas.core.errors import UsageError
    from search_spaces.catalog import get_space
    t0 = time.perf_counter()
    for n in sizes:
        if n < 5 or n > 15625:
            raise UsageError(f"--sizes: {n} archs is outside [5, 15625]")
    if repeats < 1:
        raise UsageError(f"--repeats {repeats} must be at least 1")
    names = list(devices) if devices else list(DEVICES)
    for d in names:
        device(d)   # unknown device: UnknownNameError listing the valid ones
    data = nb201_latency()
    space = get_space("nb201")
    blocks = sorted(data.index, key=data.index.__getitem__)
    archs = [space.parse(b) for b in blocks]
    xs = {g: FeatureCache(space, g).matrix(archs) for g in GRAPHS}
    macs = xs["built"][:, :4].sum(axis=1)
    rng = np.random.default_rng(seed)
    rows: dict[str, Any] = {}
    for d in names:
        y = np.array([data.ms[d][b] for b in blocks])
        row: dict[str, Any] = {"macs": _spearman(macs, y)}
        for n in sizes:
            rhos, graphs = [], []
            for _ in range(repeats if n <= 100 else 1):
                idx = rng.choice(len(y), size=n, replace=False)
                fit = fit_best({g: x[idx] for g, x in xs.items()}, y[idx])
                rhos.append(_spearman(fit.predict(xs[fit.graph]), y))
                graphs.append(fit.graph)
            row[str(n)] = {"spearman": float(np.mean(rhos)), "min": float(np.min(rhos)), "max": float(np.max(rhos)),
                           "runs": len(rhos), "graphs": {g: graphs.count(g) for g in sorted(set(graphs))}}
        rows[d] = row
        if progress:
            log.info("%s: %s", d, ", ".join(f"{n}: {row[str(n)]['spearman']:.3f}" for n in sizes))
    six = [d for d in HELP_TEST_DEVICES if d in rows]
    help_mean = {str(n): float(np.mean([rows[d][str(n)]["spearman"] for d in six])) for n in sizes} if six else {}
    if six:
        help_mean["macs"] = float(np.mean([rows[d]["macs"] for d in six]))
    return {"space": "nb201", "archs": len(blocks), "sizes": list(sizes), "repeats": repeats, "seed": seed,
            "devices": rows, "help_six": six, "help_six_mean": help_mean, "anchors": ANCHORS,
            "seconds": time.perf_counter() - t0}


def format_benchmark(r: dict[str, Any]) -> str:
    sizes = [str(n) for n in r["sizes"]]
    head = f"{'device':<15} " + " ".join(f"{'n=' + n:>14}" for n in sizes) + f" {'MACs':>6}"
    lines = [f"calibrated device model vs measured latency of all {r['archs']} NB201 archs (Spearman; "
             f"mean [min] over {r['repeats']} samples for n <= 100)", head]
    for d, row in r["devices"].items():
        cells = " ".join(f"{row[n]['spearman']:>7.3f} [{row[n]['min']:.3f}]" for n in sizes)
        lines.append(f"{d:<15} {cells} {row['macs']:>6.3f}")
    if r["help_six_mean"]:
        m = r["help_six_mean"]
        label = "HELP six mean" if len(r["help_six"]) == len(HELP_TEST_DEVICES) else f"mean of {len(r['help_six'])}/6 HELP"
        lines.append(f"{label:<15} " + " ".join(f"{m[n]:>14.3f}" for n in sizes) + f" {m['macs']:>6.3f}")
    lines.append("anchors: " + ", ".join(f"{k} {v}" for k, v in r["anchors"].items()))
    lines.append(f"time: {r['seconds']:.1f} s")
    return "\n".join(lines)
