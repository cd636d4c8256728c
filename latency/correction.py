"""A learned correction of LUT predictions, stored as plain coefficients in the table JSON.

A sum of separately timed layers misses what happens between layers in a whole net: operator
fusion across layer borders, cache reuse of one layer's output by the next, and per-network costs.
The correction models the residual `measured - LUT` as a linear function of per-network features
that are themselves sums over layers (LUT ms, layer count, MACs, activation elements in + out -
a separately timed layer pays for feeding its input and allocating its output, which a whole net
mostly does not - and per-op-type ms and counts)::

    corrected(arch) = overhead + intercept + sum over layers of (ms + w . phi(layer))

Because it stays a sum over layers, a corrected table is again a LUT (each entry shifted by
`w . phi(layer)`), so `LUTModel`'s vectorised gather keeps working. Fitting uses scikit-learn's
RidgeCV on standardised features, weighted by 1/measured^2 so that the fit minimises relative
error; ridge shrinks towards "no correction", and the feature set (none, offset, scale, scale +
count, all) is picked by cross-validation, so few samples cannot make matters worse.
Non-linear models (e.g. gradient boosting) would need pickles and would break the vectorised
path, so they are left out on purpose.

Stored as ``metadata["correction"]`` = {"format": "nas-latency-correction/1", "intercept_ms": b,
"weights": {feature: w}, "fit": {...}} - no pickle, readable by any JSON tool.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from nas.core.errors import LatencyError
from nas.core.layer import LayerSpec

FORMAT = "nas-latency-correction/1"
#: one net's layers with their (overhead-free) LUT ms
LayerTimes = Sequence[tuple[LayerSpec, float]]


def layer_features(spec: LayerSpec, ms: float) -> dict[str, float]:
    """phi(layer): the per-layer terms whose sums over a net are the correction's features."""
    from nas.core.ops import layer_macs
    act = (math.prod(spec.input_shape) + math.prod(spec.output_shape)) / 1e6
    return {"ms": ms, "count": 1.0, "macs_m": layer_macs(spec) / 1e6, "act_m": act,
            f"ms:{spec.op}": ms, f"count:{spec.op}": 1.0}


def lut_ms(layers: LayerTimes, overhead_ms: float) -> float:
    """The plain LUT prediction of one net: the call overhead once plus its layers' ms."""
    return overhead_ms + sum(ms for _, ms in layers)


def net_features(layers: LayerTimes) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec, ms in layers:
        for name, v in layer_features(spec, ms).items():
            out[name] = out.get(name, 0.0) + v
    return out


@dataclass(frozen=True)
class Correction:
    """Linear residual model: delta(layer) = w . phi(layer); intercept added once per net."""

    intercept_ms: float
    weights: Mapping[str, float]
    fit: dict[str, Any] = field(default_factory=dict, compare=False)

    def layer_delta(self, spec: LayerSpec, ms: float) -> float:
        return sum(self.weights.get(name, 0.0) * v for name, v in layer_features(spec, ms).items())

    def predict(self, layers: LayerTimes, overhead_ms: float) -> float:
        return overhead_ms + self.intercept_ms + sum(ms + self.layer_delta(s, ms) for s, ms in layers)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "intercept_ms": self.intercept_ms, "weights": dict(sorted(self.weights.items())),
                "fit": dict(self.fit)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> "Correction":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LatencyError(f"latency table {source}: correction has format {got!r}; expected {FORMAT!r}")
        weights = data.get("weights")
        if not isinstance(weights, dict):
            weights = {"<weights missing>": None}
        numbers = [data.get("intercept_ms"), *weights.values()]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise LatencyError(f"latency table {source}: correction needs a finite 'intercept_ms' and a "
                               f"'weights' object of finite numbers")
        return cls(float(data["intercept_ms"]), {str(k): float(v) for k, v in weights.items()},
                   dict(data.get("fit") or {}))


def table_correction(metadata: Mapping[str, Any], source: str = "<memory>") -> Correction | None:
    """The correction stored in a table's metadata, or None."""
    data = metadata.get("correction")
    return None if data is None else Correction.from_dict(data, source)


#: nets needed per fitted feature for a feature set to be eligible
PER_FEATURE = 5
#: feature sets tried, simplest first; "none" keeps the plain LUT. Chosen by cross-validation among
#: those with at most one feature per PER_FEATURE nets.
CANDIDATES: dict[str, tuple[str, ...] | None] = {
    "none": None, "offset": (), "scale": ("ms",), "scale+count": ("ms", "count"),
    "scale+count+act": ("ms", "count", "act_m"), "full": ("*",)}


def _ridge(x: np.ndarray, resid: np.ndarray, weight: np.ndarray, alphas: Sequence[float]) -> tuple[np.ndarray, float, float]:
    """(coef, intercept, alpha) in raw feature units; constant columns get weight 0."""
    from sklearn.linear_model import RidgeCV
    coef = np.zeros(x.shape[1])
    mean, std = x.mean(axis=0), x.std(axis=0)
    keep = std > 1e-12 * np.maximum(1.0, np.abs(mean))   # constant features are absorbed by the intercept
    if not keep.any():
        return coef, float(np.average(resid, weights=weight)), float("nan")
    z = (x[:, keep] - mean[keep]) / std[keep]
    model = RidgeCV(alphas=list(alphas), fit_intercept=True).fit(z, resid, sample_weight=weight)
    coef[keep] = model.coef_ / std[keep]
    return coef, float(model.intercept_ - np.sum(coef[keep] * mean[keep])), float(model.alpha_)


def _cv_mape(x: np.ndarray | None, resid: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> float:
    """Cross-validated mean |relative error| in % (leave-one-out up to 30 nets, else 10 folds)."""
    return float(_cv_errors(x, resid, y, alphas).mean() * 100)


def _cv_errors(x: np.ndarray | None, resid: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Each net's |relative error| when it was held out (leave-one-out up to 30 nets, else 10 folds)."""
    n = len(y)
    folds = np.array_split(np.random.default_rng(0).permutation(n), min(n, 10) if n > 30 else n)
    errs = np.empty(n)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        if x is None:
            pred = np.zeros(len(test))
        else:
            coef, b, _ = _ridge(x[train], resid[train], 1.0 / y[train] ** 2, alphas)
            pred = b + x[test] @ coef
        errs[test] = np.abs(resid[test] - pred) / y[test]
    return errs


#: how fit_correction picks among the eligible feature sets by their held-out (cross-validated) MAPE:
#: "best" the lowest; "one-se" the simplest within one standard error of the lowest (int8 profiles:
#: on 10 noisy nb201 nets 'offset' won by 1.2 points, 17.6% -> 16.4%, and missed later nets by -21%)
RULES = ("best", "one-se")


def select(scores: Mapping[str, float], errors_se: Mapping[str, float], eligible: Sequence[str],
           rule: str = "best") -> str:
    """The feature set kept: among `eligible` (in `CANDIDATES` order, simplest first), the lowest
    held-out MAPE (`best`), or the simplest whose MAPE is within one standard error of it (`one-se`)."""
    if rule not in RULES:
        raise LatencyError(f"unknown correction rule {rule!r}; valid: {', '.join(RULES)}")
    order = [k for k in CANDIDATES if k in eligible]
    best = min(order, key=lambda k: (round(scores[k], 6), order.index(k)))
    if rule == "best":
        return best
    return next(k for k in order if scores[k] <= scores[best] + errors_se[best] + 1e-9)


def fit_correction(nets: Sequence[LayerTimes], overheads: ArrayLike, measured: ArrayLike,
                   alphas: Sequence[float] = tuple(np.logspace(-3, 3, 13)), note: str = "",
                   rule: str = "best") -> Correction:
    """Fit the residual model on nets whose whole-net latency `measured` (ms) is known.

    Several feature sets (`CANDIDATES`, from "none" = plain LUT to all features) are compared by
    cross-validated relative error and the best is kept, so a handful of samples cannot make the
    correction worse than the LUT it corrects (it then selects "none" or "offset"); a set with more
    than one feature per `PER_FEATURE` nets is scored but not eligible."""
    y_meas = np.asarray(measured, dtype=float)
    if len(nets) != len(y_meas):
        raise LatencyError(f"fit_correction: {len(nets)} nets but {len(y_meas)} measurements")
    if len(nets) < 3:
        raise LatencyError(f"fitting a latency correction needs at least 3 measured nets, got {len(nets)}")
    if not np.all(np.isfinite(y_meas) & (y_meas > 0)):
        raise LatencyError("fit_correction: measured latencies must be finite and positive")
    ovh = np.broadcast_to(np.asarray(overheads, dtype=float), y_meas.shape)
    feats = [net_features(n) for n in nets]
    names = sorted({k for f in feats for k in f})
    x = np.array([[f.get(k, 0.0) for k in names] for f in feats])
    base = ovh + x[:, names.index("ms")]
    resid = y_meas - base

    def cols(cand: tuple[str, ...] | None) -> list[int] | None:
        return None if cand is None else [i for i, k in enumerate(names) if "*" in cand or k in cand]
    errors = {name: _cv_errors(None if (c := cols(cand)) is None else x[:, c], resid, y_meas, alphas)
              for name, cand in CANDIDATES.items()}
    scores = {name: float(e.mean() * 100) for name, e in errors.items()}
    se = {name: float(e.std(ddof=1) / np.sqrt(len(e)) * 100) for name, e in errors.items()}
    # at least 5 nets per feature: with 10 calibration nets a 14-feature set won its leave-one-out
    # score (0.9%) and then missed held-out hytra nets by -4.8% where the plain LUT had -0.2%
    limit = max(1, len(nets) // PER_FEATURE)
    eligible = [k for k, cand in CANDIDATES.items() if cand is None or len(cols(cand) or []) <= limit]
    best = select(scores, se, eligible, rule)
    chosen = cols(CANDIDATES[best])
    if chosen is None:
        coef, b, alpha, used = np.zeros(0), 0.0, float("nan"), []
    else:
        coef, b, alpha = _ridge(x[:, chosen], resid, 1.0 / y_meas ** 2, alphas)
        used = [names[i] for i in chosen]
    weights = {name: float(w) for name, w in zip(used, coef) if w != 0.0}
    fitted = base + b + (x[:, chosen] @ coef if chosen else 0.0)
    info = {"model": "ridge on per-net feature sums, residual of the LUT, weights 1/ms^2; feature set "
                     "chosen by cross-validated MAPE", "selected": best,
            "cv_mape_pct": {k: round(v, 4) for k, v in scores.items()}, "eligible": eligible,
            **({"rule": rule, "cv_se_pct": {k: round(v, 4) for k, v in se.items()}} if rule != "best" else {}),
            "n": len(nets), "alpha": alpha, "features": used,
            "train_mape_pct_before": float(np.mean(np.abs(base - y_meas) / y_meas) * 100),
            "train_mape_pct_after": float(np.mean(np.abs(fitted - y_meas) / y_meas) * 100),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if note:
        info["note"] = note
    return Correction(b, weights, info)
