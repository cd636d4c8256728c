"""`nas bench latency`: `nas latency calibrate` on every measured NB201 device, against ground truth.

For each device of latency/bench_devices.py (all 15,625 NAS-Bench-201 archs measured) and each
budget n (10 / 100 / 900 by default), sample n archs at random (seeded, `repeats` times for small
budgets), fit the calibrated device model on those n only (latency.calibrate.fit_best: the same fit
as the command), predict all 15,625 archs and take the Spearman correlation with the measurements.
Nothing is tuned on the evaluated archs: the ridge strength and the graph (built / live ops) are
chosen by leave-one-out error on the n sampled archs.

`--basis` adds the models of latency/calibrate_basis.py (the device as a non-negative mix of other
devices' latencies, alone or with the roofline features), kept when their leave-one-out error on the n
archs is the smallest. The basis of a device never holds that device nor any of HELP's six test devices
(`reference_devices`: 21 devices for each of the six). The rule "smallest leave-one-out error, no margin"
was picked on the 21 other devices (10 archs, 6 samples: mean 0.970 against 0.958 for the roofline
alone), never on the six.

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


def reference_devices(target: str) -> list[str]:
    """The basis for `target` with --basis: every shipped device except `target` and HELP's six test
    devices (so no test device ever helps predict one of the six, nor itself)."""
    from latency.bench_devices import DEVICES
    return [d for d in DEVICES if d != target and d not in HELP_TEST_DEVICES]


def calibration_benchmark(devices: Sequence[str] | None = None, sizes: Sequence[int] = DEFAULT_SIZES,
                          repeats: int = 5, seed: int = 0, progress: bool = False,
                          basis: bool = False) -> dict[str, Any]:
    """Spearman over all measured archs of the model calibrated on n random archs, per device and n.

    `repeats` samples for n <= 100, one for larger n (the fit is then stable). Returns per device and n
    the mean / min / max Spearman and the graphs chosen, the mean over HELP's six test devices, MACs as
    a fit-free baseline and the anchors. `basis`: also fit on the other devices' latencies
    (`reference_devices`; latency/calibrate_basis.py) and keep the model with the smallest
    leave-one-out error on the n archs; `models` counts the kinds kept."""
    from latency.bench_calibration import check_benchmark_args
    from latency.bench_devices import nb201_latency
    from latency.calibrate import FEATURES, GRAPHS, FeatureCache, fit_best
    from latency.calibrate_basis import choose
    from search_spaces.catalog import get_space
    t0 = time.perf_counter()
    names = check_benchmark_args(devices, sizes, repeats)
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
        refs = reference_devices(d) if basis else []
        ref = np.array([[data.ms[r][b] for r in refs] for b in blocks]) if basis else None
        row: dict[str, Any] = {"macs": _spearman(macs, y)}
        for n in sizes:
            rhos, graphs, kinds, roof = [], [], [], []
            for _ in range(repeats if n <= 100 else 1):
                idx = rng.choice(len(y), size=n, replace=False)
                fit = fit_best({g: x[idx] for g, x in xs.items()}, y[idx])
                pred, kind = fit.predict(xs[fit.graph]), "roofline"
                roof.append(_spearman(pred, y))
                if ref is not None:
                    pick = choose(fit, ref[idx], xs[fit.graph][idx], y[idx], refs, FEATURES)
                    pred, kind = pick.predict(ref, xs[fit.graph]), pick.kind
                rhos.append(_spearman(pred, y))
                graphs.append(fit.graph)
                kinds.append(kind)
            row[str(n)] = {"spearman": float(np.mean(rhos)), "min": float(np.min(rhos)), "max": float(np.max(rhos)),
                           "runs": len(rhos), "graphs": {g: graphs.count(g) for g in sorted(set(graphs))},
                           "models": {k: kinds.count(k) for k in sorted(set(kinds))},
                           "roofline_only": float(np.mean(roof))}   # same samples, without the basis
        rows[d] = row
        if progress:
            log.info("%s: %s", d, ", ".join(f"{n}: {row[str(n)]['spearman']:.3f}" for n in sizes))
    six = [d for d in HELP_TEST_DEVICES if d in rows]
    help_mean = {str(n): float(np.mean([rows[d][str(n)]["spearman"] for d in six])) for n in sizes} if six else {}
    if six:
        help_mean["macs"] = float(np.mean([rows[d]["macs"] for d in six]))
        if basis:
            help_mean.update({f"{n}_roofline_only": float(np.mean([rows[d][str(n)]["roofline_only"] for d in six]))
                              for n in sizes})
    return {"space": "nb201", "archs": len(blocks), "sizes": list(sizes), "repeats": repeats, "seed": seed,
            "basis": "other devices except HELP's six test devices" if basis else None,
            "devices": rows, "help_six": six, "help_six_mean": help_mean, "anchors": ANCHORS,
            "seconds": time.perf_counter() - t0}


def format_benchmark(r: dict[str, Any]) -> str:
    sizes = [str(n) for n in r["sizes"]]
    head = f"{'device':<15} " + " ".join(f"{'n=' + n:>14}" for n in sizes) + f" {'MACs':>6}"
    lines = [f"calibrated device model vs measured latency of all {r['archs']} NB201 archs (Spearman; "
             f"mean [min] over {r['repeats']} samples for n <= 100)", head]
    if r.get("basis"):
        lines[0] += f"; basis: {r['basis']}; models kept at n={sizes[0]} in braces"
    for d, row in r["devices"].items():
        cells = " ".join(f"{row[n]['spearman']:>7.3f} [{row[n]['min']:.3f}]" for n in sizes)
        kept = (", ".join(f"{k} {v}" for k, v in row[sizes[0]].get("models", {}).items())
                + f"; roofline alone {row[sizes[0]]['roofline_only']:.3f}") if r.get("basis") else ""
        lines.append(f"{d:<15} {cells} {row['macs']:>6.3f}" + (f"  {{{kept}}}" if kept else ""))
    if r["help_six_mean"]:
        m = r["help_six_mean"]
        label = "HELP six mean" if len(r["help_six"]) == len(HELP_TEST_DEVICES) else f"mean of {len(r['help_six'])}/6 HELP"
        lines.append(f"{label:<15} " + " ".join(f"{m[n]:>14.3f}" for n in sizes) + f" {m['macs']:>6.3f}")
        if r.get("basis"):
            alone = " ".join(f"{m[n + '_roofline_only']:>14.3f}" for n in sizes)
            lines.append(f"{'  roofline alone':<15} {alone}")
    lines.append("anchors: " + ", ".join(f"{k} {v}" for k, v in r["anchors"].items()))
    lines.append(f"time: {r['seconds']:.1f} s")
    return "\n".join(lines)
