"""Calibration on a basis of measured devices (`nas latency calibrate --space nb201 --basis ...`).

A device's latency over archs is well explained by other devices' latencies of the same archs (the
idea behind HELP, Lee et al. NeurIPS 2021, and MAPLE-Edge, Nair et al. 2022): a phone ranks nets
much as other phones do. For nb201 the shipped tables hold 27 measured devices for all 15,625 archs
(latency/bench_devices.py), so a new device measured on a few nets can be fitted as

    basis:           t(arch) = c0 + sum_j w_j * t_j(arch)                     (w_j >= 0)
    basis+roofline:  t(arch) = c0 + sum_j w_j * t_j(arch) + features(arch) @ v  (w, v >= 0)

with t_j the reference devices' measurements and `features` the per-op roofline features of
latency/calibrate.py. Each is a ridge-regularised non-negative least squares on mean-scaled columns
with relative errors (as in calibrate.py; here shrunk toward zero), the ridge picked by leave-one-out
on the measured nets. `choose` then keeps, among the roofline model of calibrate.py and these two, the
one with the smallest leave-one-out error on the measured nets only (nothing else is looked at).

Such a model predicts whole nets, not layers, so its output is a measured-kind table
(latency/measured.py) holding the prediction for every arch of the reference tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from latency.calibrate import LAMBDAS, Fit, _rel
from latency.measured import MeasuredTable
from latency.table import LatencyTable
from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace

#: model kinds `choose` compares (the roofline one is calibrate.py's)
KINDS = ("roofline", "basis", "basis+roofline")


def _solve(a: np.ndarray, y: np.ndarray, ridge: float) -> tuple[float, np.ndarray]:
    """c0 >= 0, w >= 0 minimising the relative squared error plus ridge * |w|^2 on mean-scaled columns."""
    scale = a.mean(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = a / scale
    n, k = z.shape
    rel = (y.mean() / np.maximum(y, 1e-3 * y.mean()))[:, None]
    m = np.vstack([np.hstack([np.ones((n, 1)), z]) * rel, np.hstack([np.zeros((k, 1)), math.sqrt(ridge) * np.eye(k)])])
    b = np.concatenate([y * rel[:, 0], np.zeros(k)])
    sol, _ = nnls(m, b, maxiter=100 * (k + 1))
    return float(sol[0]), sol[1:] / scale


@dataclass(frozen=True)
class ColumnFit:
    """t = intercept_ms + columns @ weights, for the columns named in `columns`."""

    kind: str
    columns: tuple[str, ...]
    intercept_ms: float
    weights: tuple[float, ...]
    ridge: float
    cv_error: float
    cv_spearman: float | None
    archs: int

    def predict(self, a: np.ndarray) -> np.ndarray:
        return self.intercept_ms + np.asarray(a, float) @ np.asarray(self.weights)


def fit_columns(kind: str, columns: Sequence[str], a: np.ndarray, y: np.ndarray) -> ColumnFit:
    """Ridge NNLS of `y` on the columns of `a`, the ridge chosen by leave-one-out relative error."""
    from scipy.stats import spearmanr
    a, y = np.asarray(a, float), np.asarray(y, float)
    best: tuple[float, float, np.ndarray] | None = None
    for ridge in LAMBDAS:
        pred = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            c, w = _solve(a[keep], y[keep], ridge)
            pred[i] = c + a[i] @ w
        err = _rel(pred, y)
        if best is None or err < best[0] - 1e-12:
            best = (err, ridge, pred)
    assert best is not None
    cv, ridge, loo = best
    c, w = _solve(a, y, ridge)
    rho = float(spearmanr(loo, y)[0]) if np.ptp(loo) > 0 and np.ptp(y) > 0 else None
    return ColumnFit(kind, tuple(columns), c, tuple(float(v) for v in w), ridge, cv, rho, len(y))


@dataclass(frozen=True)
class Choice:
    """The model `choose` kept, and every candidate's leave-one-out error (for the report)."""

    kind: str
    model: Fit | ColumnFit
    cv_errors: dict[str, float]

    def predict(self, reference: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Predictions for archs with reference latencies (archs x devices) and roofline features
        (archs x FEATURES, of the roofline fit's graph)."""
        if isinstance(self.model, Fit):
            return self.model.predict(features)
        cols = reference if self.kind == "basis" else np.hstack([reference, features])
        return self.model.predict(cols)


def choose(roofline: Fit, reference: np.ndarray, features: np.ndarray, y: np.ndarray,
           devices: Sequence[str], feature_names: Sequence[str]) -> Choice:
    """Among the roofline fit (already made on these nets) and the basis / basis+roofline fits of the
    measured nets (`reference`: nets x devices; `features`: nets x FEATURES of the roofline's graph),
    the smallest leave-one-out error wins."""
    basis = fit_columns("basis", devices, reference, y)
    both = fit_columns("basis+roofline", [*devices, *feature_names], np.hstack([reference, features]), y)
    errors = {"roofline": roofline.cv_error, "basis": basis.cv_error, "basis+roofline": both.cv_error}
    kind = min(KINDS, key=lambda k: errors[k])
    model: Fit | ColumnFit = {"roofline": roofline, "basis": basis, "basis+roofline": both}[kind]
    return Choice(kind, model, errors)


# ---- `nas latency calibrate --basis` -----------------------------------------------------------------
def basis_devices(spec: str) -> list[str]:
    """`--basis` value: 'all' (the 27 shipped NB201 devices) or comma-separated device names."""
    from latency.bench_devices import DEVICES, device
    names = [d.strip() for d in spec.split(",") if d.strip()]
    for d in names:
        if d != "all":
            device(d)   # unknown: UnknownNameError listing the valid devices
    if "all" in names:
        return list(DEVICES)
    if not names:
        raise UsageError(f"--basis {spec!r} names no device; give 'all' or devices such as pixel3,raspi4")
    return list(dict.fromkeys(names))


def calibrate_with_basis(space: SearchSpace, rows: Sequence[tuple[Arch, float]], devices: Sequence[str],
                         name: str, source: str) -> tuple[Choice, LatencyTable | MeasuredTable]:
    """Fit the roofline, basis and basis+roofline models to the measured nets and keep the one with the
    smallest leave-one-out error: a per-layer table for the roofline, else a measured-kind table of
    the predictions for every arch the reference devices cover."""
    from latency.bench_devices import nb201_latency
    from latency.calibrate import FEATURES, FeatureCache, build_table, calibrate
    from latency.measured import BENCH_OPTIONS, BENCH_SPACE
    if space.name != BENCH_SPACE or any(space.options().get(k) != v for k, v in BENCH_OPTIONS.items()):
        raise UsageError(f"--basis uses the measured NAS-Bench-201 devices: it needs --space {BENCH_SPACE} with the "
                         f"benchmark's nets ({', '.join(f'{k}={v}' for k, v in BENCH_OPTIONS.items())})")
    roof = calibrate(space, rows)
    data = nb201_latency()
    blocks = [space.format(a) for a, _ in rows]
    ref = np.array([[data.ms[d][b] for d in devices] for b in blocks])
    cache = FeatureCache(space, roof.graph)
    y = np.array([ms for _, ms in rows])
    pick = choose(roof, ref, cache.matrix(a for a, _ in rows), y, devices, FEATURES)
    if pick.kind == "roofline":
        return pick, build_table(space, roof, name, source=source)
    everything = sorted(data.index, key=data.index.__getitem__)
    pred = pick.predict(np.array([[data.ms[d][b] for d in devices] for b in everything]),
                        cache.matrix(space.parse(b) for b in everything))
    floor = 1e-3 * float(y.min())   # a measured-kind table holds positive times only
    model = pick.model
    assert isinstance(model, ColumnFit)
    meta = {"device": name, "units": "ms", "batch": 1, "source": f"predicted from {len(rows)} measured nets ({source})",
            "statistic": "model prediction", "model": f"{pick.kind}: t = c0 + sum_j w_j t_j(arch)"
            + (" + roofline features @ v" if pick.kind != "basis" else "") + " (latency/calibrate_basis.py)",
            "graph": roof.graph, "intercept_ms": model.intercept_ms,
            "weights": {c: w for c, w in zip(model.columns, model.weights) if w > 0}, "ridge": model.ridge,
            "cv": {"method": "leave-one-out on the measured nets", "errors": pick.cv_errors,
                   "error_is": "sum|predicted - measured| / sum(measured)", "spearman": model.cv_spearman},
            "basis": list(devices), "archs_measured": len(rows)}
    table = MeasuredTable(space.name, space.options(), meta,
                          {b: max(float(p), floor) for b, p in zip(everything, pred)})
    return pick, table
