"""Leave-device-out benchmark of few-shot calibration on the 27 measured NB201 devices.

For every device d and budget n (5 / 10 / 20 measured nets by default), `repeats` random draws of n
archs: the device is calibrated from its n measured nets only, exactly as `nas latency calibrate
--basis all` would do it for a new device, with the basis of shipped devices WITHOUT d
(leave_out="device") or without every device of d's kind (leave_out="kind": no other GPU for a GPU,
no other phone for a phone; a harder test standing in for devices unlike any we ship). The model
predicts all 15,625 archs; the score is the Spearman correlation with d's measurements.

Compared on the same draws:
- ours: latency/calibrate_select.py's blend (rule fixed in advance, looks only at the n nets);
- nearest: the basis device whose latencies rank the n nets best (Spearman), its latencies as the
  prediction;
- counts: plain NNLS of ms on the counts of live ops per op type + a constant;
- roofline: latency/calibrate.py's fit alone (what `nas latency calibrate` did before).
HELP's six test devices are also scored at n=10 with the basis HELP's protocol allows (the 21 devices
outside the six): `help_six`.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from nas.core.errors import UsageError

log = logging.getLogger(__name__)

HELP_TEST_DEVICES = ("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss")
DEFAULT_SIZES = (5, 10, 20)
LEAVE_OUT = ("device", "kind")
METHODS = ("ours", "nearest", "counts", "roofline")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b)[0]) if np.ptp(a) > 0 else 0.0


def basis_for(target: str, leave_out: str) -> list[str]:
    """The shipped devices a calibration of `target` may use under the leave-out rule."""
    from latency.bench_devices import DEVICES
    if leave_out == "help":
        return [d for d in DEVICES if d != target and d not in HELP_TEST_DEVICES]
    kind = DEVICES[target].kind
    return [d for d in DEVICES if d != target and (leave_out == "device" or DEVICES[d].kind != kind)]


class _Data:
    """All archs' features, live-op counts and measured latencies (computed once)."""

    def __init__(self) -> None:
        from latency.bench_devices import DEVICES, nb201_latency
        from latency.calibrate import GRAPHS, FeatureCache
        from latency.calibrate_select import CountCache
        from search_spaces.catalog import get_space
        data = nb201_latency()
        space = get_space("nb201")
        blocks = sorted(data.index, key=data.index.__getitem__)
        archs = [space.parse(b) for b in blocks]
        self.xs = {g: FeatureCache(space, g).matrix(archs) for g in GRAPHS}
        cc = CountCache(space, "live")
        self.columns = cc.columns(archs)
        self.counts = cc.matrix(archs, self.columns)
        self.names = list(DEVICES)
        self.y = np.array([[data.ms[d][b] for d in self.names] for b in blocks])

    def col(self, device: str) -> np.ndarray:
        return self.y[:, self.names.index(device)]


def _one(data: _Data, device: str, basis: Sequence[str], idx: np.ndarray) -> dict[str, Any]:
    from latency.calibrate_select import fit_blend, fit_counts
    y = data.col(device)
    ref = np.column_stack([data.col(d) for d in basis])
    xs_i = {g: x[idx] for g, x in data.xs.items()}
    blend = fit_blend(xs_i, data.counts[idx], y[idx], ref[idx], data.columns)
    preds = blend.family_predictions(data.xs, data.counts, ref)
    ours = sum(w * preds[f] for f, w in zip(blend.families, blend.weights))
    near = int(np.argmax([_spearman(ref[idx, k], y[idx]) for k in range(ref.shape[1])]))
    counts = fit_counts(data.counts[idx], y[idx]).predict(data.counts)
    return {"ours": _spearman(ours, y), "nearest": _spearman(ref[:, near], y), "counts": _spearman(counts, y),
            "roofline": _spearman(preds["roofline"], y), "nearest_device": basis[near],
            "weights": dict(zip(blend.families, blend.weights))}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {m: float(np.mean([r[m] for r in runs])) for m in METHODS}
    out["ours_min"] = float(np.min([r["ours"] for r in runs]))
    out["runs"] = len(runs)
    fams = runs[0]["weights"].keys()
    out["weights"] = {f: float(np.mean([r["weights"][f] for r in runs])) for f in fams}
    return out


def check_benchmark_args(devices: Sequence[str] | None, sizes: Sequence[int], repeats: int) -> list[str]:
    """The devices a leave-device-out benchmark runs on (all shipped ones by default), after checking
    its sizes (5 to 15,625 measured archs), repeats and device names (UsageError / UnknownNameError)."""
    from latency.bench_devices import DEVICES, device as check_device
    for n in sizes:
        if n < 5 or n > 15625:
            raise UsageError(f"--sizes: {n} archs is outside [5, 15625]")
    if repeats < 1:
        raise UsageError(f"--repeats {repeats} must be at least 1")
    names = list(devices) if devices else list(DEVICES)
    for d in names:
        check_device(d)   # unknown device: UnknownNameError listing the valid ones
    return names


def leave_device_out(devices: Sequence[str] | None = None, sizes: Sequence[int] = DEFAULT_SIZES,
                     repeats: int = 5, seed: int = 0, leave_out: str = "device", help_six: bool = True,
                     progress: bool = False) -> dict[str, Any]:
    """Spearman over all 15,625 archs of ours / nearest / counts / roofline, per device and n."""
    t0 = time.process_time()
    if leave_out not in LEAVE_OUT:
        raise UsageError(f"--leave-out {leave_out!r}; valid: {', '.join(LEAVE_OUT)}")
    names = check_benchmark_args(devices, sizes, repeats)
    data = _Data()
    rng = np.random.default_rng(seed)
    rows: dict[str, Any] = {}
    for d in names:
        basis = basis_for(d, leave_out)
        row: dict[str, Any] = {}
        for n in sizes:
            runs = [_one(data, d, basis, rng.choice(len(data.y), size=n, replace=False)) for _ in range(repeats)]
            row[str(n)] = _summary(runs)
        rows[d] = row
        if progress:
            log.info("%s: %s", d, ", ".join(f"{n}: {row[str(n)]['ours']:.3f}" for n in sizes))
    mean = {str(n): {m: float(np.mean([rows[d][str(n)][m] for d in rows])) for m in METHODS} for n in sizes}
    worst = {str(n): {m: float(np.min([rows[d][str(n)][m] for d in rows])) for m in METHODS} for n in sizes}
    six: dict[str, Any] = {}
    if help_six:
        hrng = np.random.default_rng(seed + 1)
        for d in HELP_TEST_DEVICES:
            runs = [_one(data, d, basis_for(d, "help"), hrng.choice(len(data.y), size=10, replace=False))
                    for _ in range(repeats)]
            six[d] = _summary(runs)
        six["mean"] = {m: float(np.mean([six[d][m] for d in HELP_TEST_DEVICES])) for m in METHODS}
    return {"space": "nb201", "archs": len(data.y), "sizes": list(sizes), "repeats": repeats, "seed": seed,
            "leave_out": leave_out, "devices": rows, "mean": mean, "worst": worst, "help_six": six,
            "help_anchor": {"HELP (10 archs)": 0.932}, "cpu_seconds": time.process_time() - t0}


def format_leave_device_out(r: dict[str, Any]) -> str:
    sizes = [str(n) for n in r["sizes"]]
    basis = "all other devices" if r["leave_out"] == "device" else "devices of other kinds only"
    lines = [f"leave-device-out calibration on {r['archs']} NB201 archs: Spearman, mean of {r['repeats']} draws "
             f"of n measured nets; basis: {basis}",
             f"{'device':<15}" + "".join(f" | n={n:<3} {'ours':>6} {'near':>6} {'count':>6}" for n in sizes)]
    for d, row in r["devices"].items():
        lines.append(f"{d:<15}" + "".join(f" | {'':5} {row[n]['ours']:>6.3f} {row[n]['nearest']:>6.3f} "
                                          f"{row[n]['counts']:>6.3f}" for n in sizes))
    for label, agg in (("mean", r["mean"]), ("worst device", r["worst"])):
        lines.append(f"{label:<15}" + "".join(f" | {'':5} {agg[n]['ours']:>6.3f} {agg[n]['nearest']:>6.3f} "
                                              f"{agg[n]['counts']:>6.3f}" for n in sizes))
    lines.append("roofline alone (mean): " + ", ".join(f"n={n} {r['mean'][n]['roofline']:.3f}" for n in sizes))
    if r["help_six"]:
        six = r["help_six"]
        lines.append("HELP's six test devices at n=10, basis without the six (ours / nearest / counts / roofline):")
        for d in HELP_TEST_DEVICES:
            lines.append(f"  {d:<15} {six[d]['ours']:.3f} / {six[d]['nearest']:.3f} / {six[d]['counts']:.3f} / "
                         f"{six[d]['roofline']:.3f}")
        m = six["mean"]
        lines.append(f"  {'mean':<15} {m['ours']:.3f} / {m['nearest']:.3f} / {m['counts']:.3f} / {m['roofline']:.3f}"
                     f"   (HELP paper, 10 archs: {r['help_anchor']['HELP (10 archs)']})")
    lines.append(f"cpu time: {r['cpu_seconds']:.0f} s")
    return "\n".join(lines)
