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
on the measured nets. latency/calibrate_select.py blends these families with the others (its fixed
rule; the older "smallest leave-one-out error wins" `choose` here is gone, superseded by the blend).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from latency.calibrate import LAMBDAS, _rel
from nas.core.errors import UsageError


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
